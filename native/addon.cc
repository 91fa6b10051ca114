// model_stock.node: registers the exports; each lives in the file named beside it.
#include <napi.h>

#include "exports.h"
#include "js_errors.h"

namespace {

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  env.SetInstanceData(new ms::AddonData());
  const struct {
    const char* name;
    Napi::Value (*fn)(const Napi::CallbackInfo&);
  } functions[] = {
      {"gram", ms::Gram},                // workers.cc
      {"interpolate", ms::Interpolate},  // workers.cc
      {"lowRankPack", ms::LowRankPack},                // lowrank_job.cc
      {"lowRankGram", ms::LowRankGram},                // lowrank_job.cc
      {"lowRankInterpolate", ms::LowRankInterpolate},  // lowrank_job.cc
      {"info", ms::Info},                // runtime.cc
      {"setErrorConstructor", ms::SetErrorConstructor},  // runtime.cc
      {"setPoolNice", ms::SetPoolNice},  // runtime.cc
      {"allocHost", ms::AllocHost},      // memory.cc
      {"freeHost", ms::FreeHost},        // memory.cc
      {"mapFile", ms::MapFile},          // io.cc
      {"mapView", ms::MapView},          // io.cc
      {"mapRelease", ms::MapRelease},    // io.cc
      {"mapFault", ms::MapFault},        // io.cc (fault_guard.cc)
      {"unmap", ms::Unmap},              // io.cc
      {"fileWillNeed", ms::FileWillNeed},  // io.cc
      {"mapWillNeed", ms::MapWillNeed},    // io.cc
      {"openInputFile", ms::OpenInputFile},        // reader.cc
      {"inputFileInfo", ms::InputFileInfo},        // reader.cc
      {"closeInputFile", ms::CloseInputFile},      // reader.cc
      {"readRanges", ms::ReadRanges},              // reader.cc
      {"inputResidency", ms::InputResidency},      // reader.cc
      {"probeDirectIo", ms::ProbeDirectIo},        // reader.cc
      {"inputReaderStats", ms::InputReaderStats},  // reader.cc
      {"openShardWriter", ms::OpenShardWriter},    // writer.cc
      {"shardWrite", ms::ShardWrite},              // writer.cc
      {"shardWriterInfo", ms::ShardWriterInfo},    // writer.cc
      {"closeShardWriter", ms::CloseShardWriter},  // writer.cc
      {"abortShardWriter", ms::AbortShardWriter},  // writer.cc
      {"shardWriterStats", ms::ShardWriterStats},  // writer.cc
      {"mapClose", ms::MapClose},        // io.cc
      {"lockFile", ms::LockFile},        // lock.cc
      {"renamePaths", ms::RenamePaths},  // fsops.cc
      {"cudaInfo", ms::CudaInfo},                              // cuda/exports.cc
      {"cudaMemoryInfo", ms::CudaMemoryInfo},                  // cuda/exports.cc
      {"cudaAllocHost", ms::CudaAllocHost},                    // cuda/exports.cc
      {"cudaFreeHost", ms::CudaFreeHost},                      // cuda/exports.cc
      {"cudaOpenTensor", ms::CudaOpenTensor},                  // cuda/exports.cc
      {"cudaEmulateGram", ms::CudaEmulateGram},                // cuda/emulate.cc
      {"cudaEmulateInterpolate", ms::CudaEmulateInterpolate},  // cuda/emulate.cc
      {"cudaCodecSelfTest", ms::CudaCodecSelfTest},            // cuda/emulate.cc
  };
  for (const auto& f : functions) exports.Set(f.name, Napi::Function::New(env, f.fn, f.name));
  return exports;
}

}  // namespace

NODE_API_MODULE(model_stock, Init)
