// TensorRT plugin glue for the fused preprocessing op (liboptim_preprocess_trt.so).
//
// Plugin "OptimPreprocess", version "1", namespace "optim". Input: float32 [N,H,W,C] holding the
// frames' 0..255 values (N dynamic, C in {1,3}): TensorRT passes plugins no uint8 tensors
// (PluginTensorDesc::type: "DataType::kBOOL and DataType::kUINT8 are not supported"), so the
// ONNX graph casts the uint8 network input to float on the GPU first; the host still copies
// uint8 frames. Output: float32 or float16 [N,C,out_h,out_w]. enqueue runs the same kernel as
// liboptim_preprocess_cuda.so (optim_preprocess_cuda_f32). Fields, as TensorRT's ONNX parser passes
// the node's attributes: scale (float), mean and std (comma-separated text, or 1 or 3 floats),
// out_h and out_w (int32 or int64; 0 or absent: the input size), out_dtype ("float32" or
// "float16"), channel_order ("RGB" or "BGR").
//
// Registration: no REGISTER_TENSORRT_PLUGIN (it always registers under the empty namespace);
// the library exports setLoggerFinder and getCreators, the entry points IPluginRegistry::
// loadLibrary looks for, and the creator reports namespace "optim".
//
// TensorRT API names used (TensorRT 10, NvInferRuntime.h / NvInferPluginBase.h):
//   IPluginV3 (getCapabilityInterface, clone), PluginCapabilityType, IPluginCapability,
//   IPluginV3OneCore (getPluginName, getPluginVersion, getPluginNamespace),
//   IPluginV3OneBuild (getNbOutputs, configurePlugin, supportsFormatCombination,
//     getOutputDataTypes, getOutputShapes), DynamicPluginTensorDesc, DimsExprs,
//     IDimensionExpr, IExprBuilder::constant, TensorFormat::kLINEAR,
//     DataType::kFLOAT / kHALF,
//   IPluginV3OneRuntime (onShapeChange, enqueue, attachToContext, getFieldsToSerialize),
//     PluginTensorDesc, IPluginResourceContext,
//   IPluginCreatorV3One (getPluginName, getPluginVersion, getPluginNamespace, getFieldNames,
//     createPlugin), TensorRTPhase, IPluginCreatorInterface,
//   PluginField, PluginFieldCollection, PluginFieldType::kFLOAT32 / kFLOAT64 / kINT32 /
//     kINT64 / kCHAR, ILoggerFinder::findLogger, ILogger::log, ILogger::Severity::kERROR.
#include "preprocess_trt_plugin.h"

#include <atomic>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "preprocess_api.h"

using namespace nvinfer1;

namespace optim_trt {
namespace {

char const* const kName = "OptimPreprocess";
char const* const kVersion = "1";
char const* const kNamespace = "optim";

std::atomic<ILoggerFinder*> gLoggerFinder{nullptr};

void logError(std::string const& what) noexcept {
  std::string const msg = std::string(kName) + ": " + what;
  ILoggerFinder* finder = gLoggerFinder.load();
  ILogger* logger = finder ? finder->findLogger() : nullptr;
  if (logger)
    logger->log(ILogger::Severity::kERROR, msg.c_str());
  else
    std::fprintf(stderr, "%s\n", msg.c_str());
}

// kCHAR field as text: stops at a NUL (some producers count it), trims spaces.
std::string fieldText(PluginField const& f) {
  std::string t(static_cast<char const*>(f.data), f.length > 0 ? static_cast<size_t>(f.length) : 0);
  t = t.substr(0, t.find('\0'));
  size_t const b = t.find_first_not_of(" \t");
  size_t const e = t.find_last_not_of(" \t");
  return b == std::string::npos ? std::string() : t.substr(b, e - b + 1);
}

bool readInt(PluginField const& f, int64_t& v) {
  if (f.length < 1) return false;
  if (f.type == PluginFieldType::kINT32) v = *static_cast<int32_t const*>(f.data);
  else if (f.type == PluginFieldType::kINT64) v = *static_cast<int64_t const*>(f.data);
  else return false;
  return true;
}

bool readFloat(PluginField const& f, int32_t i, float& v) {
  if (f.length <= i) return false;
  if (f.type == PluginFieldType::kFLOAT32) v = static_cast<float const*>(f.data)[i];
  else if (f.type == PluginFieldType::kFLOAT64) v = static_cast<float>(static_cast<double const*>(f.data)[i]);
  else return false;
  return true;
}

// mean / std: "a,b,c" or "a" as text, or 1 or 3 floats; one value applies to every channel.
bool readTriple(PluginField const& f, float out[3]) {
  std::vector<float> values;
  if (f.type == PluginFieldType::kCHAR) {
    std::string const text = fieldText(f);
    char const* s = text.c_str();
    while (*s) {
      char* end = nullptr;
      float const v = std::strtof(s, &end);
      if (end == s) return false;
      values.push_back(v);
      while (*end == ' ' || *end == '\t') ++end;
      if (*end == ',') ++end;
      else if (*end) return false;
      s = end;
    }
  } else {
    for (int32_t i = 0; i < f.length; ++i) {
      float v = 0.f;
      if (!readFloat(f, i, v)) return false;
      values.push_back(v);
    }
  }
  if (values.size() != 1 && values.size() != 3) return false;
  for (int i = 0; i < 3; ++i) out[i] = values[values.size() == 1 ? 0 : i];
  return true;
}

}  // namespace

bool parseFields(PluginFieldCollection const* fc, PreprocessConfig& cfg, std::string& error) {
  for (int32_t i = 0; fc && i < fc->nbFields; ++i) {
    PluginField const& f = fc->fields[i];
    if (!f.name || !f.data) continue;
    std::string const name = f.name;
    int64_t v = 0;
    bool ok = true;
    if (name == "scale") {
      ok = readFloat(f, 0, cfg.scale);
    } else if (name == "mean") {
      ok = readTriple(f, cfg.mean);
    } else if (name == "std") {
      ok = readTriple(f, cfg.std) && cfg.std[0] != 0.f && cfg.std[1] != 0.f && cfg.std[2] != 0.f;
    } else if (name == "out_h" || name == "out_w") {
      ok = readInt(f, v) && v >= 0 && v <= INT32_MAX;
      (name == "out_h" ? cfg.out_h : cfg.out_w) = static_cast<int32_t>(v);
    } else if (name == "out_dtype") {
      std::string const t = fieldText(f);
      ok = t == "float32" || t == "float16";
      cfg.fp16 = t == "float16";
    } else if (name == "channel_order") {
      std::string const t = fieldText(f);
      ok = t == "RGB" || t == "BGR";
      cfg.bgr = t == "BGR";
    }  // other fields (plugin_version, plugin_namespace, ...) are not ours
    if (!ok) {
      error = "bad value for field '" + name + "'";
      return false;
    }
  }
  return true;
}

// ---- PreprocessPlugin: IPluginV3 ----

IPluginCapability* PreprocessPlugin::getCapabilityInterface(PluginCapabilityType type) noexcept {
  switch (type) {
    case PluginCapabilityType::kCORE: return static_cast<IPluginV3OneCore*>(this);
    case PluginCapabilityType::kBUILD: return static_cast<IPluginV3OneBuild*>(this);
    case PluginCapabilityType::kRUNTIME: return static_cast<IPluginV3OneRuntime*>(this);
  }
  return nullptr;
}

IPluginV3* PreprocessPlugin::clone() noexcept {
  try {
    return new PreprocessPlugin(*this);
  } catch (...) {
    logError("out of memory in clone");
    return nullptr;
  }
}

// ---- IPluginV3OneCore ----

char const* PreprocessPlugin::getPluginName() const noexcept { return kName; }
char const* PreprocessPlugin::getPluginVersion() const noexcept { return kVersion; }
char const* PreprocessPlugin::getPluginNamespace() const noexcept { return kNamespace; }

// ---- IPluginV3OneBuild ----

int32_t PreprocessPlugin::getNbOutputs() const noexcept { return 1; }

int32_t PreprocessPlugin::configurePlugin(DynamicPluginTensorDesc const* in, int32_t nbInputs,
                                          DynamicPluginTensorDesc const* /*out*/, int32_t nbOutputs) noexcept {
  if (nbInputs != 1 || nbOutputs != 1 || in[0].desc.dims.nbDims != 4) {
    logError("expects one [N,H,W,C] input and one output");
    return -1;
  }
  int64_t const c = in[0].desc.dims.d[3];  // -1 while unknown
  if (c != -1 && c != 1 && c != 3) {
    logError("input channels must be 1 or 3, got " + std::to_string(c));
    return -1;
  }
  return 0;
}

bool PreprocessPlugin::supportsFormatCombination(int32_t pos, DynamicPluginTensorDesc const* inOut,
                                                 int32_t nbInputs, int32_t nbOutputs) noexcept {
  if (nbInputs != 1 || nbOutputs != 1 || pos < 0 || pos > 1) return false;
  PluginTensorDesc const& desc = inOut[pos].desc;
  if (desc.format != TensorFormat::kLINEAR) return false;
  if (pos == 0) return desc.type == DataType::kFLOAT;
  return desc.type == (mCfg.fp16 ? DataType::kHALF : DataType::kFLOAT);
}

int32_t PreprocessPlugin::getOutputDataTypes(DataType* outputTypes, int32_t nbOutputs, DataType const* inputTypes,
                                             int32_t nbInputs) const noexcept {
  if (nbInputs != 1 || nbOutputs != 1 || inputTypes[0] != DataType::kFLOAT) {
    logError("expects one float32 input (the frames cast from uint8) and one output");
    return -1;
  }
  outputTypes[0] = mCfg.fp16 ? DataType::kHALF : DataType::kFLOAT;
  return 0;
}

int32_t PreprocessPlugin::getOutputShapes(DimsExprs const* inputs, int32_t nbInputs, DimsExprs const* /*shapeInputs*/,
                                          int32_t /*nbShapeInputs*/, DimsExprs* outputs, int32_t nbOutputs,
                                          IExprBuilder& exprBuilder) noexcept {
  if (nbInputs != 1 || nbOutputs != 1 || inputs[0].nbDims != 4) {
    logError("expects one [N,H,W,C] input and one output");
    return -1;
  }
  DimsExprs const& nhwc = inputs[0];
  outputs[0].nbDims = 4;
  outputs[0].d[0] = nhwc.d[0];
  outputs[0].d[1] = nhwc.d[3];
  outputs[0].d[2] = mCfg.out_h > 0 ? exprBuilder.constant(mCfg.out_h) : nhwc.d[1];
  outputs[0].d[3] = mCfg.out_w > 0 ? exprBuilder.constant(mCfg.out_w) : nhwc.d[2];
  return 0;
}

// ---- IPluginV3OneRuntime ----

int32_t PreprocessPlugin::onShapeChange(PluginTensorDesc const* in, int32_t nbInputs,
                                        PluginTensorDesc const* /*out*/, int32_t nbOutputs) noexcept {
  if (nbInputs != 1 || nbOutputs != 1 || in[0].dims.nbDims != 4 || (in[0].dims.d[3] != 1 && in[0].dims.d[3] != 3)) {
    logError("input must be [N,H,W,C] with C 1 or 3");
    return -1;
  }
  return 0;
}

int32_t PreprocessPlugin::enqueue(PluginTensorDesc const* inputDesc, PluginTensorDesc const* outputDesc,
                                  void const* const* inputs, void* const* outputs, void* /*workspace*/,
                                  cudaStream_t stream) noexcept {
  Dims const& in = inputDesc[0].dims;
  Dims const& out = outputDesc[0].dims;
  OptimPreprocessParams p{};
  p.n = in.d[0];
  p.h = in.d[1];
  p.w = in.d[2];
  p.c = in.d[3];
  p.out_h = out.d[2];
  p.out_w = out.d[3];
  p.scale = mCfg.scale;
  for (int i = 0; i < 3; ++i) {
    p.mean[i] = mCfg.mean[i];
    p.std[i] = mCfg.std[i];
  }
  p.bgr = mCfg.bgr ? 1 : 0;
  p.out_fp16 = outputDesc[0].type == DataType::kHALF ? 1 : 0;
  int const status = optim_preprocess_cuda_f32(&p, static_cast<float const*>(inputs[0]), outputs[0], stream);
  if (status != 0) {
    logError(status < 0 ? "bad shapes or parameters (code " + std::to_string(status) + ")"
                        : "kernel launch failed (cudaError " + std::to_string(status) + ")");
    return -1;
  }
  return 0;
}

IPluginV3* PreprocessPlugin::attachToContext(IPluginResourceContext* /*context*/) noexcept { return clone(); }

PluginFieldCollection const* PreprocessPlugin::getFieldsToSerialize() noexcept {
  try {
    char const* dtype = mCfg.fp16 ? "float16" : "float32";
    char const* order = mCfg.bgr ? "BGR" : "RGB";
    mFields = {
        PluginField("scale", &mCfg.scale, PluginFieldType::kFLOAT32, 1),
        PluginField("mean", mCfg.mean, PluginFieldType::kFLOAT32, 3),
        PluginField("std", mCfg.std, PluginFieldType::kFLOAT32, 3),
        PluginField("out_h", &mCfg.out_h, PluginFieldType::kINT32, 1),
        PluginField("out_w", &mCfg.out_w, PluginFieldType::kINT32, 1),
        PluginField("out_dtype", dtype, PluginFieldType::kCHAR, static_cast<int32_t>(std::strlen(dtype))),
        PluginField("channel_order", order, PluginFieldType::kCHAR, static_cast<int32_t>(std::strlen(order))),
    };
    mFieldCollection.nbFields = static_cast<int32_t>(mFields.size());
    mFieldCollection.fields = mFields.data();
    return &mFieldCollection;
  } catch (...) {
    logError("out of memory in getFieldsToSerialize");
    return nullptr;
  }
}

// ---- PreprocessPluginCreator ----

PreprocessPluginCreator::PreprocessPluginCreator() {
  mFieldNames = {
      PluginField("scale", nullptr, PluginFieldType::kFLOAT32, 1),
      PluginField("mean", nullptr, PluginFieldType::kCHAR, 0),
      PluginField("std", nullptr, PluginFieldType::kCHAR, 0),
      PluginField("out_h", nullptr, PluginFieldType::kINT32, 1),
      PluginField("out_w", nullptr, PluginFieldType::kINT32, 1),
      PluginField("out_dtype", nullptr, PluginFieldType::kCHAR, 0),
      PluginField("channel_order", nullptr, PluginFieldType::kCHAR, 0),
  };
  mFieldCollection.nbFields = static_cast<int32_t>(mFieldNames.size());
  mFieldCollection.fields = mFieldNames.data();
}

char const* PreprocessPluginCreator::getPluginName() const noexcept { return kName; }
char const* PreprocessPluginCreator::getPluginVersion() const noexcept { return kVersion; }
char const* PreprocessPluginCreator::getPluginNamespace() const noexcept { return kNamespace; }
PluginFieldCollection const* PreprocessPluginCreator::getFieldNames() noexcept { return &mFieldCollection; }

// The same fields arrive from the ONNX parser (kBUILD) and from a serialized engine (kRUNTIME).
IPluginV3* PreprocessPluginCreator::createPlugin(char const* name, PluginFieldCollection const* fc,
                                                 TensorRTPhase /*phase*/) noexcept {
  try {
    PreprocessConfig cfg;
    std::string error;
    if (!parseFields(fc, cfg, error)) {
      logError(std::string("node '") + (name ? name : "") + "': " + error);
      return nullptr;
    }
    return new PreprocessPlugin(cfg);
  } catch (...) {
    logError("out of memory in createPlugin");
    return nullptr;
  }
}

}  // namespace optim_trt

extern "C" void setLoggerFinder(ILoggerFinder* finder) { optim_trt::gLoggerFinder.store(finder); }

extern "C" IPluginCreatorInterface* const* getCreators(int32_t& nbCreators) {
  static optim_trt::PreprocessPluginCreator creator;
  static IPluginCreatorInterface* const creators[] = {&creator};
  nbCreators = 1;
  return creators;
}
