/** The safetensors format: validated reading, windowed tensor reads, shard planning and writing. */
export type { Checkpoint, SafetensorsFile, ShardLayout, TensorInfo, TensorLayoutEntry } from './types';
export { parseHeader, parseHeaderSliced, scanKeys, type ParsedHeader, type KeyScan } from './header';
export { parseIndex, readIndexFile, MAX_INDEX_SIZE, type ParsedIndex } from './indexFile';
export { readSafetensorsFile, MAX_HEADER_SIZE } from './file';
export { openCheckpoint, INDEX_FILE, SINGLE_FILE } from './checkpoint';
export { TensorReader, windows, DEFAULT_WINDOW_BYTES, type TensorWindow } from './window';
export {
  planShards,
  planShardsSliced,
  indexJson,
  indexJsonPieces,
  shardFileName,
  DEFAULT_FORMAT_METADATA,
  type PlanOptions,
} from './layout';
export { SafetensorsWriter } from './writer';
