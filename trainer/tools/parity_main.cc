// parity: checks this project's Stable Diffusion components against
// reference outputs of the Python stack (diffusers / transformers).
//
//   bazel run //trainer/tools:parity -- --model_dir=D --reference_dir=R
//
// Runs every reference file present in R (names and keys as in
// ../shared/fixtures/tiny-sd1/reference) and prints one line per component:
// max |diff|, max |ref|, relative error, PASS or FAIL. Exits 0 only when every
// component present passes (relative error <= --tolerance); a component
// whose model part is absent from D is reported as skipped.
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>

#include <gflags/gflags.h>
#include <nlohmann/json.hpp>

#include "absl/strings/str_format.h"
#include "common/init/init.h"
#include "trainer/diffusion/schedulers.h"
#include "trainer/model/clip_text_model.h"
#include "trainer/model/clip_tokenizer.h"
#include "trainer/model/device.h"
#include "trainer/model/torch_compat.h"
#include "trainer/model/torch_tensors.h"
#include "trainer/model/unet.h"
#include "trainer/model/vae.h"
#include "trainer/pipeline/txt2img.h"
#include "trainer/training/train_step_check.h"

DEFINE_string(model_dir, "", "A diffusers model folder.");
DEFINE_string(reference_dir, "", "Folder of reference files (*_io.safetensors, ...).");
DEFINE_double(tolerance, 1e-4, "Largest relative error that passes.");
DEFINE_string(device, "cpu",
              "Where the text encoder, UNet and VAE run (cpu, cuda, cuda:N); the tokenizer, "
              "schedulers, pipeline and training step are checked on the CPU.");
DEFINE_string(mixed_precision, "no",
              "no or bf16: run those three under autocast (raise --tolerance to report bf16).");
DEFINE_bool(allow_tf32, false,
            "Let cuDNN and cuBLAS compute float32 in TF32 on GPUs (PyTorch's default for "
            "convolutions). It moves results by ~1e-3 relative, so the 1e-4 check needs it off.");

namespace {

namespace fs = std::filesystem;
using namespace dd::model;  // NOLINT: a main file

struct Report {
  int failed = 0;
  int passed = 0;
  void Line(const std::string& component, double max_diff, double max_ref) {
    double rel = max_ref > 0 ? max_diff / max_ref : max_diff;
    bool ok = rel <= FLAGS_tolerance;
    std::cout << absl::StrFormat("%-34s max|diff| %.3e  max|ref| %.3e  rel %.3e  %s\n", component,
                                 max_diff, max_ref, rel, ok ? "PASS" : "FAIL");
    ok ? ++passed : ++failed;
  }
  void Compare(const std::string& component, const at::Tensor& got_any, const at::Tensor& want) {
    if (got_any.sizes() != want.sizes()) {
      Fail(component, "shape mismatch");
      return;
    }
    // Wherever it ran and in whatever precision, compared in float32 on the CPU.
    const at::Tensor got = got_any.to(at::kCPU, at::kFloat);
    Line(component, (got - want.to(at::kFloat)).abs().max().item<double>(),
         want.abs().max().item<double>());
  }
  void Fail(const std::string& component, const std::string& why) {
    std::cout << absl::StrFormat("%-34s FAIL  %s\n", component, why);
    ++failed;
  }
  void Pass(const std::string& component, const std::string& what) {
    std::cout << absl::StrFormat("%-34s PASS  %s\n", component, what);
    ++passed;
  }
  void Skip(const std::string& component, const std::string& why) {
    std::cout << absl::StrFormat("%-34s skipped (%s)\n", component, why);
  }
};

bool Exists(const std::string& p) { return fs::exists(p); }

at::Device g_device{at::kCPU};  // --device, resolved in Run

// Moves a model's weights to --device in place (every holder of a weight
// sees it there, as the trainer does it).
template <typename Model>
void ToDevice(Model& model) {
  for (const auto& p : model.parameters()) p.value.set_data(p.value.to(g_device));
}

// `t` on --device (reference inputs are read to the CPU).
at::Tensor In(const at::Tensor& t) { return t.defined() ? t.to(g_device) : t; }

// Autocast for the network components while it lives (--mixed_precision).
class Precision {
 public:
  Precision() : on_(FLAGS_mixed_precision == "bf16") {
    if (on_) SetAutocast(g_device.is_cuda(), true, at::kBFloat16);
  }
  ~Precision() {
    if (on_) SetAutocast(g_device.is_cuda(), false, at::kBFloat16);
  }

 private:
  const bool on_;
};

void Tokenizer(Report& r) {
  std::string cases = FLAGS_reference_dir + "/tokenizer_cases.json";
  if (!Exists(cases)) return;
  if (!Exists(FLAGS_model_dir + "/tokenizer")) return r.Skip("tokenizer", "no tokenizer/ in model_dir");
  auto tok = ClipTokenizer::Load(FLAGS_model_dir + "/tokenizer");
  if (!tok.ok()) return r.Fail("tokenizer", std::string(tok.status().message()));
  std::ifstream in(cases);
  std::stringstream ss;
  ss << in.rdbuf();
  nlohmann::json doc = nlohmann::json::parse(ss.str(), nullptr, false);
  if (doc.is_discarded()) return r.Fail("tokenizer", "tokenizer_cases.json is not JSON");
  int total = 0, wrong = 0;
  for (const auto& c : doc["cases"]) {
    std::string text = c["text"].get<std::string>();
    ++total;
    if ((*tok)->Encode(text) != c["ids"].get<std::vector<int>>() ||
        (*tok)->EncodePadded(text) != c["ids_padded_77"].get<std::vector<int>>()) {
      ++wrong;
      std::cout << "  tokenizer mismatch on \"" << text << "\"\n";
    }
  }
  r.Line(absl::StrFormat("tokenizer (%d cases, %d wrong)", total, wrong), wrong, total);
}

void TextEncoder(Report& r) {
  std::string io = FLAGS_reference_dir + "/text_encoder_io.safetensors";
  if (!Exists(io)) return;
  if (!Exists(FLAGS_model_dir + "/text_encoder")) return r.Skip("text_encoder", "no text_encoder/");
  auto model = ClipTextModel::Load(FLAGS_model_dir + "/text_encoder");
  if (!model.ok()) return r.Fail("text_encoder", std::string(model.status().message()));
  auto ref = LoadTensors(io);
  if (!ref.ok()) return r.Fail("text_encoder", std::string(ref.status().message()));
  ToDevice(**model);
  Precision precision;
  auto out = (*model)->Forward(In(ref->at("input_ids")));
  if (!out.ok()) return r.Fail("text_encoder", std::string(out.status().message()));
  r.Compare("text_encoder.last_hidden_state", out->last_hidden_state, ref->at("last_hidden_state"));
  r.Compare("text_encoder.penultimate_hidden_state", out->hidden_states[out->hidden_states.size() - 2],
            ref->at("penultimate_hidden_state"));
  r.Compare("text_encoder.penultimate_normed", out->Normed(2), ref->at("penultimate_normed"));
  r.Compare("text_encoder.pooler_output", out->pooled, ref->at("pooler_output"));
}

void Unet(Report& r) {
  std::string io = FLAGS_reference_dir + "/unet_io.safetensors";
  if (!Exists(io)) return;
  if (!Exists(FLAGS_model_dir + "/unet")) return r.Skip("unet", "no unet/");
  auto unet = UNet::Load(FLAGS_model_dir + "/unet");
  if (!unet.ok()) return r.Fail("unet", std::string(unet.status().message()));
  auto ref = LoadTensors(io);
  if (!ref.ok()) return r.Fail("unet", std::string(ref.status().message()));
  // SDXL-style references also carry the text_time conditioning.
  at::Tensor text_embeds = ref->count("added_text_embeds") ? ref->at("added_text_embeds") : at::Tensor();
  at::Tensor time_ids = ref->count("added_time_ids") ? ref->at("added_time_ids") : at::Tensor();
  ToDevice(**unet);
  Precision precision;
  auto out = (*unet)->Forward(In(ref->at("sample")), In(ref->at("timestep")),
                              In(ref->at("encoder_hidden_states")), In(text_embeds), In(time_ids));
  if (!out.ok()) return r.Fail("unet", std::string(out.status().message()));
  r.Compare("unet.output", *out, ref->at("output"));
}

void Vae(Report& r) {
  std::string io = FLAGS_reference_dir + "/vae_io.safetensors";
  if (!Exists(io)) return;
  if (!Exists(FLAGS_model_dir + "/vae")) return r.Skip("vae", "no vae/");
  auto vae = AutoencoderKL::Load(FLAGS_model_dir + "/vae");
  if (!vae.ok()) return r.Fail("vae", std::string(vae.status().message()));
  auto ref = LoadTensors(io);
  if (!ref.ok()) return r.Fail("vae", std::string(ref.status().message()));
  ToDevice(**vae);
  Precision precision;
  auto dist = (*vae)->Encode(In(ref->at("image")));
  if (!dist.ok()) return r.Fail("vae", std::string(dist.status().message()));
  r.Compare("vae.latent_mean", dist->mean, ref->at("latent_mean"));
  r.Compare("vae.latent_logvar", dist->logvar, ref->at("latent_logvar"));
  r.Compare("vae.latent_std", dist->std, ref->at("latent_std"));
  auto decoded = (*vae)->Decode(In(ref->at("z")));
  if (!decoded.ok()) return r.Fail("vae", std::string(decoded.status().message()));
  r.Compare("vae.decoded", *decoded, ref->at("decoded"));
}

void Schedulers(Report& r) {
  std::string io_path = FLAGS_reference_dir + "/scheduler_io.safetensors";
  std::string outs_path = FLAGS_reference_dir + "/scheduler_model_outputs.safetensors";
  if (!Exists(io_path) || !Exists(outs_path)) return;
  std::string cfg_path = FLAGS_model_dir + "/scheduler/scheduler_config.json";
  if (!Exists(cfg_path)) return r.Skip("scheduler", "no scheduler/");
  std::ifstream in(cfg_path);
  std::stringstream ss;
  ss << in.rdbuf();
  auto config = dd::diffusion::ParseScheduleConfig(ss.str(), cfg_path);
  if (!config.ok()) return r.Fail("scheduler", std::string(config.status().message()));
  auto io = LoadTensors(io_path);
  auto outs = LoadTensors(outs_path);
  if (!io.ok() || !outs.ok()) return r.Fail("scheduler", "cannot read the reference files");
  dd::diffusion::NoiseSchedule schedule(*config);
  r.Compare("scheduler.alphas_cumprod", schedule.alphas_cumprod(), io->at("alphas_cumprod"));
  r.Compare("scheduler.add_noise", schedule.AddNoise(io->at("x0"), io->at("noise"), io->at("t")),
            io->at("noisy"));
  r.Compare("scheduler.velocity", schedule.Velocity(io->at("x0"), io->at("noise"), io->at("t")),
            io->at("velocity"));
  int64_t steps = io->at("ddim_timesteps").size(0);
  dd::diffusion::DdimSampler ddim(*config, steps);
  at::Tensor x = io->at("ddim_trajectory")[0];
  for (int64_t i = 0; i < steps; ++i) {
    x = ddim.Step(outs->at("ddim_model_outputs")[i], ddim.timesteps()[i].item<int64_t>(), x);
  }
  r.Compare("scheduler.ddim_trajectory_end", x, io->at("ddim_trajectory")[steps]);
  dd::diffusion::EulerSampler euler(*config, steps);
  r.Compare("scheduler.euler_sigmas", euler.sigmas(), io->at("euler_sigmas"));
  x = io->at("euler_trajectory")[0];
  for (int64_t i = 0; i < steps; ++i) {
    at::Tensor out = outs->at("euler_noise_part")[i] + 0.01 * euler.ScaleModelInput(x, i);
    x = euler.Step(out, i, x);
  }
  r.Compare("scheduler.euler_trajectory_end", x, io->at("euler_trajectory")[steps]);
}

nlohmann::json ReadJson(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return nlohmann::json::parse(ss.str(), nullptr, false);
}

void Pipeline(Report& r) {
  std::string io = FLAGS_reference_dir + "/pipeline_io.safetensors";
  std::string args_path = FLAGS_reference_dir + "/pipeline_args.json";
  if (!Exists(io) || !Exists(args_path)) return;
  auto model = DiffusersModel::Load(FLAGS_model_dir);
  if (!model.ok()) return r.Fail("pipeline", std::string(model.status().message()));
  auto pipe = dd::pipeline::Txt2ImgPipeline::Create(model->get());
  if (!pipe.ok()) return r.Fail("pipeline", std::string(pipe.status().message()));
  nlohmann::json args = ReadJson(args_path);
  auto ref = LoadTensors(io);
  if (args.is_discarded() || !ref.ok()) return r.Fail("pipeline", "cannot read the reference files");
  dd::pipeline::Txt2ImgOptions o;
  o.prompt = args.value("prompt", "");
  o.negative_prompt = args.value("negative_prompt", "");
  o.steps = args.value("num_inference_steps", 50);
  o.guidance = args.value("guidance_scale", 7.5);
  std::string scheduler = args.value("scheduler", "DDIMScheduler");
  o.sampler = scheduler == "EulerDiscreteScheduler" ? "euler" : "ddim";
  o.initial_latents = ref->at("latents");
  o.height = static_cast<int>(ref->at("image").size(1));
  o.width = static_cast<int>(ref->at("image").size(2));
  auto image = pipe->Generate(o);
  if (!image.ok()) return r.Fail("pipeline", std::string(image.status().message()));
  r.Compare("pipeline.image", *image, ref->at("image")[0]);
}

void TrainStep(Report& r) {
  if (!Exists(FLAGS_reference_dir + "/train_step_io.safetensors")) return;
  if (!Exists(FLAGS_model_dir + "/unet")) return r.Skip("train_step", "no unet/");
  auto c = dd::training::CompareTrainStep(FLAGS_model_dir + "/unet", FLAGS_reference_dir);
  if (!c.ok()) return r.Fail("train_step", std::string(c.status().message()));
  for (size_t s = 0; s < c->loss_rel_error.size(); ++s) {
    r.Line(absl::StrFormat("train_step.loss[%d]", s), c->loss_rel_error[s], 1.0);
    r.Line(absl::StrFormat("train_step.grad_norm[%d]", s), c->grad_norm_rel_error[s], 1.0);
  }
  // Parameter norms after two steps: a few near-zero-gradient elements
  // (see train_step_check.h) move them by ~lr, hence 1e-3.
  std::string norms = absl::StrFormat("worst relative error %.2e", c->worst_param_norm_rel_error);
  if (c->worst_param_norm_rel_error <= 1e-3) r.Pass("train_step.param_norms", norms);
  else r.Fail("train_step.param_norms", norms);
  std::string what = absl::StrFormat(
      "%d tensors in full: %d of %d elements differ, %d of them with a clear gradient",
      c->params_compared_fully, c->elements_differing, c->elements_compared,
      c->elements_differing_with_clear_gradient);
  if (c->elements_differing_with_clear_gradient > 0 ||
      c->elements_differing > c->elements_compared * 3 / 100) {
    r.Fail("train_step.params", what);
  } else {
    r.Pass("train_step.params", what);
  }
}

absl::Status Run(int, char**) {
  if (FLAGS_model_dir.empty() || FLAGS_reference_dir.empty()) {
    return absl::InvalidArgumentError("--model_dir and --reference_dir are required");
  }
  if (!Exists(FLAGS_reference_dir)) {
    return absl::NotFoundError("no reference folder " + FLAGS_reference_dir);
  }
  if (FLAGS_mixed_precision != "no" && FLAGS_mixed_precision != "bf16") {
    return absl::InvalidArgumentError("--mixed_precision must be no or bf16");
  }
  auto device = ResolveDevice(FLAGS_device);
  if (!device.ok()) return device.status();
  g_device = *device;
  SetAllowTF32(FLAGS_allow_tf32);
  std::cout << "text encoder, UNet and VAE on " << g_device.str()
            << (FLAGS_mixed_precision == "bf16" ? " (bf16 autocast)" : "") << "\n";
  Report r;
  Tokenizer(r);
  TextEncoder(r);
  Unet(r);
  Vae(r);
  Schedulers(r);
  Pipeline(r);
  TrainStep(r);
  std::cout << r.passed << " passed, " << r.failed << " failed\n";
  if (r.failed > 0) return absl::InternalError("parity check failed");
  return absl::OkStatus();
}

}  // namespace

int main(int argc, char** argv) {
  return dd::RunMain("parity --model_dir=D --reference_dir=R", argc, argv, Run);
}
