/** The service's limits and defaults (here, apart: the command line reads them without loading the server). */

/** Request bodies larger than this are refused (413). */
export const BODY_LIMIT = 1 << 20;
/** Jobs run at once. */
export const DEFAULT_CONCURRENCY = 1;
/** Queued jobs at most (running ones not counted). */
export const DEFAULT_QUEUE = 100;
/** The nice value of the merges' native kernel threads: the event loop answers requests first. */
export const KERNEL_NICE = 10;
