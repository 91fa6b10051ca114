/**
 * Every failure is a ModelStockError with a stable `code`, and the file and tensor it concerns when
 * there is one. The codes mirror the reference safetensors crate's error variants (one per rule) plus
 * the merge's own rules from docs/merge-contract.md.
 */
export type ErrorCode =
  // safetensors format (reader)
  | 'HEADER_TOO_SMALL' // file shorter than the 8-byte length prefix
  | 'HEADER_TOO_LARGE' // declared header length > 100,000,000 bytes
  | 'INVALID_HEADER_LENGTH' // header would extend past the end of the file
  | 'INVALID_HEADER_UTF8' // header bytes are not UTF-8
  | 'INVALID_HEADER' // header is not a JSON object, or has a malformed entry
  | 'INVALID_METADATA' // __metadata__ is not a string → string map
  | 'DUPLICATE_KEY' // a tensor name appears twice in the header
  | 'UNKNOWN_DTYPE' // dtype string not in the format's list
  | 'INVALID_SHAPE' // shape not an array of non-negative safe integers
  | 'INVALID_OFFSETS' // data_offsets not [begin, end] with begin <= end
  | 'INVALID_OFFSET' // tensors not contiguous from 0 (gap or overlap)
  | 'TENSOR_INVALID_INFO' // elements × dtype size ≠ end − begin (or overflow)
  | 'METADATA_INCOMPLETE_BUFFER' // data does not end exactly at end of file
  | 'INVALID_INDEX' // model.safetensors.index.json malformed or names a missing tensor/shard
  | 'INDEX_TOO_LARGE' // model.safetensors.index.json over 64 MiB
  | 'NO_CHECKPOINT' // folder has no checkpoint (safetensors, PyTorch) or adapter file
  | 'IO_ERROR'
  // PyTorch checkpoints (.bin / .pt / .pth / .ckpt), read as data: the pickle is interpreted, never run
  | 'UNSUPPORTED_FORMAT' // legacy (pre-1.6) pickle stream or tar, a compressed zip entry, big-endian data, a quantized/sparse/meta tensor
  | 'INVALID_ARCHIVE' // zip structure or bounds (central directory, zip64, entry names, offsets)
  | 'INVALID_PICKLE' // an opcode outside what torch writes, a limit exceeded, no state dict found
  | 'INVALID_STORAGE' // a storage shorter than a tensor on it needs, missing, or of an unknown type
  | 'NON_CONTIGUOUS' // a tensor stored as a strided (e.g. transposed) view of its storage
  // LoRA adapters (PEFT)
  | 'UNSUPPORTED_ADAPTER' // an adapter field or module we cannot merge exactly (DoRA, IA3, …), named
  // merge rules
  | 'UNSUPPORTED_DTYPE' // float dtype we cannot merge (F8_*, F6_*, F4), or bad --out-dtype
  | 'SHAPE_MISMATCH'
  | 'NON_FINITE' // NaN or Inf in an input of a merged tensor
  | 'TOO_FEW_MODELS'
  | 'NO_COMMON_TENSORS' // a fine-tune none of whose tensors matches a mergeable base tensor
  | 'BAD_OUTPUT_PATH' // OUT exists (without overwrite), or is/contains/lies inside an input
  | 'BAD_CONFIG' // YAML or options we cannot honour
  | 'BACKEND_UNAVAILABLE'
  | 'INVALID_ARGUMENT' // a call that breaks an API's contract (e.g. a backend window of the wrong size)
  | 'INVALID_REPORT' // a merge report (model_stock_report.json) that is not JSON or not in the report's schema
  | 'NATIVE_ERROR'
  | 'CUDA_OUT_OF_MEMORY' // the device (or pinned host memory) cannot hold what a tensor needs
  | 'CUDA_ERROR' // any other CUDA runtime failure
  | 'CANCELLED'
  // Hugging Face Hub model IDs
  | 'MODEL_NOT_CACHED' // offline (HF_HUB_OFFLINE) and the ID is not complete in the cache
  | 'HUB_ERROR'; // the Hub refused, failed or timed out, or a download did not match its hash

/**
 * Terminal control characters (C0 — newlines and tabs too —, DEL and C1) written as `\xHH`. File and
 * tensor names come from files anyone can craft, and messages reach terminals and logs, where an escape
 * sequence could rewrite what is shown and a newline could forge a line.
 */
export function escapeControl(text: string): string {
  return text.replace(
    // eslint-disable-next-line no-control-regex -- finding control characters is the point
    /[\u0000-\u001f\u007f-\u009f]/g,
    (c) => `\\x${c.charCodeAt(0).toString(16).padStart(2, '0')}`,
  );
}

export class ModelStockError extends Error {
  readonly code: ErrorCode;
  /** As found (the message has it with control characters escaped). */
  readonly file: string | undefined;
  readonly tensor: string | undefined;

  constructor(
    code: ErrorCode,
    message: string,
    where: { file?: string; tensor?: string; cause?: unknown } = {},
  ) {
    const parts: string[] = [];
    if (where.file !== undefined) parts.push(where.file);
    if (where.tensor !== undefined) parts.push(`tensor "${where.tensor}"`);
    super(escapeControl(parts.length > 0 ? `${parts.join(': ')}: ${message}` : message), {
      cause: where.cause,
    });
    this.name = 'ModelStockError';
    this.code = code;
    this.file = where.file;
    this.tensor = where.tensor;
  }
}

export function isModelStockError(e: unknown): e is ModelStockError {
  return e instanceof ModelStockError;
}

/** The error a cancelled operation rejects with: code CANCELLED, the signal's reason as its cause. */
export function cancelledError(signal: AbortSignal | undefined, what: string): ModelStockError {
  return new ModelStockError('CANCELLED', `${what}: cancelled`, { cause: signal?.reason });
}

/**
 * What a failure becomes once `signal` has fired: whatever stopped first (a kernel, a read, a write)
 * means the work was cancelled — CANCELLED, keeping the tensor it was on. Unchanged otherwise.
 */
export function asCancelled(e: unknown, signal: AbortSignal | undefined, what: string): unknown {
  if (signal?.aborted !== true) return e;
  const tensor = e instanceof ModelStockError ? e.tensor : undefined;
  return new ModelStockError('CANCELLED', `${what}: cancelled`, {
    cause: signal.reason,
    ...(tensor !== undefined ? { tensor } : {}),
  });
}

/** Throws cancelledError when `signal` has fired: the check between two pieces of work. */
export function throwIfCancelled(signal: AbortSignal | undefined, what: string): void {
  if (signal?.aborted === true) throw cancelledError(signal, what);
}

/** A Node system error that escaped uncoded (an errno code and a path) becomes IO_ERROR naming its path. */
export function asIoError(e: unknown): unknown {
  if (e instanceof ModelStockError || !(e instanceof Error)) return e;
  const { code, path: file } = e as NodeJS.ErrnoException;
  if (code === undefined || file === undefined) return e;
  return new ModelStockError('IO_ERROR', e.message, { file, cause: e });
}
