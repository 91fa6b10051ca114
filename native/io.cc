// Reading files: preadInto (parallel pread into a caller buffer) and mmap views. Phase 2.
#include "exports.h"
#include "js_errors.h"

namespace ms {

Napi::Value PreadInto(const Napi::CallbackInfo& info) { return rejected(info.Env(), "preadInto: not implemented yet", "NATIVE_ERROR"); }
Napi::Value MapFile(const Napi::CallbackInfo& info) { throw codedError(info.Env(), "mapFile: not implemented yet", "NATIVE_ERROR"); }
Napi::Value MapView(const Napi::CallbackInfo& info) { throw codedError(info.Env(), "mapView: not implemented yet", "NATIVE_ERROR"); }
Napi::Value Unmap(const Napi::CallbackInfo& info) { throw codedError(info.Env(), "unmap: not implemented yet", "NATIVE_ERROR"); }

}  // namespace ms
