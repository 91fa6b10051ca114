import { ModelStockError } from '../../errors';

/** The addon's errors are ModelStockErrors already; this adds the tensor they concern. */
export async function withTensor<T>(tensor: string, work: () => Promise<T>): Promise<T> {
  try {
    return await work();
  } catch (e) {
    if (e instanceof ModelStockError && e.tensor === undefined) {
      throw new ModelStockError(e.code, e.message, { tensor, cause: e });
    }
    throw e;
  }
}
