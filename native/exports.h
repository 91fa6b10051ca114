// The functions addon.cc registers, one concern per file.
#pragma once
#include <napi.h>

namespace ms {

// workers.cc: the two passes, as Promises
Napi::Value Gram(const Napi::CallbackInfo& info);
Napi::Value Interpolate(const Napi::CallbackInfo& info);

// lowrank_job.cc: the low-rank (LoRA) steps, as Promises
Napi::Value LowRankPack(const Napi::CallbackInfo& info);
Napi::Value LowRankGram(const Napi::CallbackInfo& info);
Napi::Value LowRankInterpolate(const Napi::CallbackInfo& info);

// runtime.cc: what the addon runs on; the error class; the kernels' priority
Napi::Value Info(const Napi::CallbackInfo& info);
Napi::Value SetErrorConstructor(const Napi::CallbackInfo& info);
Napi::Value SetPoolNice(const Napi::CallbackInfo& info);

// memory.cc: aligned host buffers
Napi::Value AllocHost(const Napi::CallbackInfo& info);
Napi::Value FreeHost(const Napi::CallbackInfo& info);

// io.cc: reading files
Napi::Value MapFile(const Napi::CallbackInfo& info);
Napi::Value MapView(const Napi::CallbackInfo& info);
Napi::Value MapRelease(const Napi::CallbackInfo& info);
Napi::Value MapFault(const Napi::CallbackInfo& info);
Napi::Value Unmap(const Napi::CallbackInfo& info);
Napi::Value FileWillNeed(const Napi::CallbackInfo& info);
Napi::Value MapWillNeed(const Napi::CallbackInfo& info);

// reader.cc: input files read straight into pipeline buffers (O_DIRECT, or buffered)
Napi::Value OpenInputFile(const Napi::CallbackInfo& info);
Napi::Value InputFileInfo(const Napi::CallbackInfo& info);
Napi::Value CloseInputFile(const Napi::CallbackInfo& info);
Napi::Value ReadRanges(const Napi::CallbackInfo& info);
Napi::Value InputResidency(const Napi::CallbackInfo& info);
Napi::Value ProbeDirectIo(const Napi::CallbackInfo& info);
Napi::Value InputReaderStats(const Napi::CallbackInfo& info);

// writer.cc: output shards with bounded dirty data
Napi::Value OpenShardWriter(const Napi::CallbackInfo& info);
Napi::Value ShardWrite(const Napi::CallbackInfo& info);
Napi::Value ShardWriterInfo(const Napi::CallbackInfo& info);
Napi::Value CloseShardWriter(const Napi::CallbackInfo& info);
Napi::Value AbortShardWriter(const Napi::CallbackInfo& info);
Napi::Value ShardWriterStats(const Napi::CallbackInfo& info);
Napi::Value MapClose(const Napi::CallbackInfo& info);

// fsops.cc: renames that never replace what they did not check
Napi::Value RenamePaths(const Napi::CallbackInfo& info);

// lock.cc: the Hugging Face cache's download lock
Napi::Value LockFile(const Napi::CallbackInfo& info);

// cuda/exports.cc: device info, pinned host memory, per-tensor sessions (stubs without CUDA)
Napi::Value CudaInfo(const Napi::CallbackInfo& info);
Napi::Value CudaMemoryInfo(const Napi::CallbackInfo& info);
Napi::Value CudaAllocHost(const Napi::CallbackInfo& info);
Napi::Value CudaFreeHost(const Napi::CallbackInfo& info);
Napi::Value CudaOpenTensor(const Napi::CallbackInfo& info);

// cuda/emulate.cc: the CUDA kernels' arithmetic on the CPU, for tests
Napi::Value CudaEmulateGram(const Napi::CallbackInfo& info);
Napi::Value CudaEmulateInterpolate(const Napi::CallbackInfo& info);
Napi::Value CudaCodecSelfTest(const Napi::CallbackInfo& info);

}  // namespace ms
