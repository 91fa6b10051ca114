/**
 * The Gram matrix of N task vectors, stored per unit as its packed upper triangle: P = N(N+1)/2
 * accumulators, (0,0) (0,1) … (0,N−1) (1,1) … (N−1,N−1). Every backend, the ratio rules and the tests
 * share this layout.
 */

/** Packed upper-triangle index of pair (i, j), i ≤ j < n, row-major. */
export function gramIndex(i: number, j: number, n: number): number {
  if (i > j) [i, j] = [j, i];
  return i * n - (i * (i - 1)) / 2 + (j - i);
}

/** P = N(N+1)/2 accumulators per unit. */
export function gramSize(n: number): number {
  return (n * (n + 1)) / 2;
}
