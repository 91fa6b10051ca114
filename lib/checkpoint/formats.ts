/**
 * The checkpoint formats, in order of preference: a folder holding weights of several formats is read
 * in the first (safetensors before PyTorch, as transformers does). A LoRA adapter comes first: a folder
 * with adapter_config.json is an adapter, whatever else it holds (its adapter_model.safetensors would
 * otherwise pass for a lone safetensors checkpoint).
 */
import { loraFormat } from '../adapter/format';
import { pytorchFormat } from '../pytorch/format';
import { safetensorsFormat } from '../safetensors/format';
import type { CheckpointFormat } from './types';

export const FORMATS: readonly CheckpointFormat[] = [loraFormat, safetensorsFormat, pytorchFormat];
