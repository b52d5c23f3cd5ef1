// TensorRT IPluginV3 wrapper of the fused preprocessing kernel: plugin "OptimPreprocess",
// version "1", namespace "optim". See preprocess_trt_plugin.cpp for the API names used.
#ifndef OPTIM_PREPROCESS_TRT_PLUGIN_H
#define OPTIM_PREPROCESS_TRT_PLUGIN_H

#include <NvInferRuntime.h>

#include <string>
#include <vector>

namespace optim_trt {

// The plugin's attributes, parsed from the ONNX node (or the serialized engine).
struct PreprocessConfig {
  float scale{1.f};
  float mean[3]{0.f, 0.f, 0.f};
  float std[3]{1.f, 1.f, 1.f};
  int32_t out_h{0};  // 0: keep the input height (no resize)
  int32_t out_w{0};  // 0: keep the input width
  bool fp16{false};  // out_dtype "float16"
  bool bgr{false};   // channel_order "BGR": input frames are BGR, output is RGB
};

// Reads the fields of fc into cfg; on a bad field returns false and says why in error.
bool parseFields(nvinfer1::PluginFieldCollection const* fc, PreprocessConfig& cfg, std::string& error);

class PreprocessPlugin : public nvinfer1::IPluginV3,
                         public nvinfer1::IPluginV3OneCore,
                         public nvinfer1::IPluginV3OneBuild,
                         public nvinfer1::IPluginV3OneRuntime {
 public:
  explicit PreprocessPlugin(PreprocessConfig const& cfg) : mCfg(cfg) {}
  PreprocessPlugin(PreprocessPlugin const& other) : mCfg(other.mCfg) {}
  PreprocessPlugin& operator=(PreprocessPlugin const&) = delete;
  ~PreprocessPlugin() override = default;

  // IPluginV3
  nvinfer1::IPluginCapability* getCapabilityInterface(nvinfer1::PluginCapabilityType type) noexcept override;
  nvinfer1::IPluginV3* clone() noexcept override;

  // IPluginV3OneCore
  char const* getPluginName() const noexcept override;
  char const* getPluginVersion() const noexcept override;
  char const* getPluginNamespace() const noexcept override;

  // IPluginV3OneBuild
  int32_t getNbOutputs() const noexcept override;
  int32_t configurePlugin(nvinfer1::DynamicPluginTensorDesc const* in, int32_t nbInputs,
                          nvinfer1::DynamicPluginTensorDesc const* out, int32_t nbOutputs) noexcept override;
  bool supportsFormatCombination(int32_t pos, nvinfer1::DynamicPluginTensorDesc const* inOut, int32_t nbInputs,
                                 int32_t nbOutputs) noexcept override;
  int32_t getOutputDataTypes(nvinfer1::DataType* outputTypes, int32_t nbOutputs,
                             nvinfer1::DataType const* inputTypes, int32_t nbInputs) const noexcept override;
  int32_t getOutputShapes(nvinfer1::DimsExprs const* inputs, int32_t nbInputs, nvinfer1::DimsExprs const* shapeInputs,
                          int32_t nbShapeInputs, nvinfer1::DimsExprs* outputs, int32_t nbOutputs,
                          nvinfer1::IExprBuilder& exprBuilder) noexcept override;

  // IPluginV3OneRuntime
  int32_t onShapeChange(nvinfer1::PluginTensorDesc const* in, int32_t nbInputs, nvinfer1::PluginTensorDesc const* out,
                        int32_t nbOutputs) noexcept override;
  int32_t enqueue(nvinfer1::PluginTensorDesc const* inputDesc, nvinfer1::PluginTensorDesc const* outputDesc,
                  void const* const* inputs, void* const* outputs, void* workspace,
                  cudaStream_t stream) noexcept override;
  nvinfer1::IPluginV3* attachToContext(nvinfer1::IPluginResourceContext* context) noexcept override;
  nvinfer1::PluginFieldCollection const* getFieldsToSerialize() noexcept override;

 private:
  PreprocessConfig mCfg;
  std::vector<nvinfer1::PluginField> mFields;  // what getFieldsToSerialize points at
  nvinfer1::PluginFieldCollection mFieldCollection{};
};

class PreprocessPluginCreator : public nvinfer1::IPluginCreatorV3One {
 public:
  PreprocessPluginCreator();
  char const* getPluginName() const noexcept override;
  char const* getPluginVersion() const noexcept override;
  char const* getPluginNamespace() const noexcept override;
  nvinfer1::PluginFieldCollection const* getFieldNames() noexcept override;
  nvinfer1::IPluginV3* createPlugin(char const* name, nvinfer1::PluginFieldCollection const* fc,
                                    nvinfer1::TensorRTPhase phase) noexcept override;

 private:
  std::vector<nvinfer1::PluginField> mFieldNames;
  nvinfer1::PluginFieldCollection mFieldCollection{};
};

}  // namespace optim_trt

// Entry points that IPluginRegistry::loadLibrary (trtexec --dynamicPlugins, the Python
// registry's load_library) looks up in a plugin library.
extern "C" {
void setLoggerFinder(nvinfer1::ILoggerFinder* finder);
nvinfer1::IPluginCreatorInterface* const* getCreators(int32_t& nbCreators);
}

#endif  // OPTIM_PREPROCESS_TRT_PLUGIN_H
