/**
 * The checkpoint formats, in order of preference: a folder holding weights of several formats is read
 * in the first (safetensors before PyTorch, as transformers does). A new format (a LoRA adapter, …) is
 * one more entry here.
 */
import { pytorchFormat } from '../pytorch/format';
import { safetensorsFormat } from '../safetensors/format';
import type { CheckpointFormat } from './types';

export const FORMATS: readonly CheckpointFormat[] = [safetensorsFormat, pytorchFormat];
