// averaging_member: one member of a butterfly all-reduce round as its own
// process. Used by the fault tests (a member killed with SIGKILL mid-round)
// and by the network benchmark (members in separate network namespaces
// behind rate-limited links).
//
//   averaging_member --listen=HOST:PORT --port_file=F --spec_file=S --index=I
//       --length=N [--codec=none|fp16|bf16|uniform8bit|blockwise8bit]
//
// It starts its Averager server, writes the bound port to --port_file, waits
// for --spec_file (JSON: {"round_id": 1, "peer_ids": [...], "addresses":
// [...], "shares": [...]}) to appear, fills its vector with the closed-form
// test values of member I (sin(0.001 k + I) (1 + I) + 0.01 I), runs the round
// and prints one JSON line with the outcome (fraction averaged, seconds,
// bytes sent and received, a checksum of the result).
#include <sys/resource.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>
#include <thread>

#include <gflags/gflags.h>
#include <nlohmann/json.hpp>

#include "absl/strings/str_format.h"
#include "common/init/init.h"
#include "common/crypto/peer_credential.h"
#include "common/rpc/auth.h"
#include "common/rpc/security.h"
#include "common/rpc/server.h"
#include "trainer/averaging/butterfly.h"

DEFINE_string(listen, "127.0.0.1:0", "Address of this member's Averager server.");
DEFINE_string(port_file, "", "Where to write the bound port.");
DEFINE_string(spec_file, "", "Round spec (JSON) to wait for.");
DEFINE_int32(index, 0, "This member's index in the spec.");
DEFINE_uint64(length, 1 << 20, "Vector length (float32 values).");
DEFINE_double(weight, 1.0, "This member's weight (samples).");
DEFINE_string(codec, "none", "none, fp16, bf16, uniform8bit or blockwise8bit.");
DEFINE_uint32(part_elements, 1 << 17, "Values per part.");
DEFINE_int32(parts_in_flight, 4, "Parts in flight per reducer.");
DEFINE_double(sender_timeout_s, 10, "Sender timeout.");
DEFINE_double(reducer_timeout_s, 20, "Reducer timeout.");
DEFINE_double(deadline_s, 600, "Round deadline from the start.");
DEFINE_double(max_send_mbps, 0, "Upload cap in Mbit/s (0: none).");
DEFINE_string(credential_key_file, "",
              "The run's credential key (PEM Ed25519), standing in for the coordinator "
              "that would hand this member its credential: the member signs its own with "
              "it and accepts the other members' (`openssl genpkey -algorithm ed25519`). "
              "Without it, parts carry only the run token, which members refuse.");
DEFINE_uint32(audits_per_span, 0,
              "Audit this many parts of every member's span (0: an unaudited round). Every "
              "member derives the same plan from the spec: the auditors of span s are the "
              "members after s.");
DEFINE_int32(linger_ms, 2000, "Keep serving this long after the round (late peers).");

namespace {

using namespace dd::averaging;  // NOLINT: a main file

absl::Status Run() {
  auto codec = CodecIdNamed(FLAGS_codec);
  if (!codec.ok()) return codec.status();
  auto security = dd::SecurityConfigFromFlags();
  if (!security.ok()) return security.status();
  std::unique_ptr<dd::CredentialIssuer> issuer;
  if (!FLAGS_credential_key_file.empty()) {
    auto loaded = dd::CredentialIssuer::LoadOrCreate(FLAGS_credential_key_file);
    if (!loaded.ok()) return loaded.status();
    issuer = std::move(*loaded);
    auto verifier = dd::CredentialVerifier::FromPublicKey(issuer->public_key());
    if (!verifier.ok()) return verifier.status();
    security->peer_verifier = std::make_shared<dd::PeerVerifierSlot>();
    security->peer_verifier->Set(*verifier);
  }
  // The values exist before the round is known, as a trainer's gradient
  // does, and before the port file announces this member, so filling them
  // neither counts as round time nor makes members start apart.
  std::vector<float> values(FLAGS_length);
  for (uint64_t k = 0; k < FLAGS_length; ++k) {
    values[k] = std::sin(0.001f * k + FLAGS_index) * (1 + FLAGS_index) + 0.01f * FLAGS_index;
  }
  AveragerService service;
  dd::ServerOptions options;
  options.listen_address = FLAGS_listen;
  options.security = *security;
  options.port_file = FLAGS_port_file;
  auto host = dd::ServiceHost::Start(options, {&service});
  if (!host.ok()) return host.status();
  (*host)->SetServing(true);

  std::string text;
  while (true) {
    std::ifstream in(FLAGS_spec_file);
    std::stringstream ss;
    ss << in.rdbuf();
    text = ss.str();
    if (!text.empty() && text.back() == '\n') break;  // written in full
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  nlohmann::json j = nlohmann::json::parse(text, nullptr, false);
  if (j.is_discarded()) return absl::InvalidArgumentError("spec is not JSON");
  RoundSpec spec;
  spec.round_id = j["round_id"].get<uint64_t>();
  spec.peer_ids = j["peer_ids"].get<std::vector<std::string>>();
  spec.addresses = j["addresses"].get<std::vector<std::string>>();
  std::vector<double> shares = j["shares"].get<std::vector<double>>();
  spec.span_starts = SplitSpans(FLAGS_length, spec.peer_ids.size(), shares);
  spec.my_index = FLAGS_index;
  if (issuer != nullptr) {
    if (spec.my_index >= spec.peer_ids.size()) return absl::InvalidArgumentError("--index out of range");
    auto credential = issuer->Issue(dd::PeerClaims{spec.peer_ids[spec.my_index], 1, "",
                                                   absl::Now() + absl::Hours(24)});
    if (!credential.ok()) return credential.status();
    security->call_token = std::make_shared<dd::CallToken>(security->auth_token);
    security->call_token->SetPeerCredential(*credential);
  }

  // The same audit plan on every member (the coordinator's planner picks
  // parts and auditors at random; a fixed plan compares runs).
  for (uint32_t span = 0; span < spec.peer_ids.size() && spec.peer_ids.size() > 1; ++span) {
    for (uint32_t k = 0; k < FLAGS_audits_per_span && k + 1 < spec.peer_ids.size(); ++k) {
      const uint32_t auditor = (span + 1 + k) % spec.peer_ids.size();
      spec.audits.push_back({span, 7919u * (span + 1) + 104729u * k, auditor});
    }
  }
  AllReduceOptions ar;
  ar.audited = FLAGS_audits_per_span > 0;
  ar.codec = *codec;
  ar.part_elements = FLAGS_part_elements;
  ar.parts_in_flight = FLAGS_parts_in_flight;
  ar.sender_timeout = absl::Seconds(FLAGS_sender_timeout_s);
  ar.reducer_timeout = absl::Seconds(FLAGS_reducer_timeout_s);
  ar.deadline = absl::Now() + absl::Seconds(FLAGS_deadline_s);
  ar.max_send_mbps = FLAGS_max_send_mbps;
  ButterflyAllReduce allreduce(&service, *security);
  auto result = allreduce.Run(spec, ar, values.data(), values.size(), FLAGS_weight);
  if (!result.ok()) return result.status();
  double checksum = 0;
  for (float v : values) checksum += v;
  int passed = 0;
  for (const AuditVerdict& v : result->audits) passed += v.outcome == AuditOutcome::kPassed;
  struct rusage usage;
  getrusage(RUSAGE_SELF, &usage);
  double cpu = usage.ru_utime.tv_sec + usage.ru_utime.tv_usec * 1e-6 + usage.ru_stime.tv_sec +
               usage.ru_stime.tv_usec * 1e-6;
  std::cout << absl::StrFormat(
                   "{\"index\": %d, \"fraction_averaged\": %.6f, \"seconds\": %.3f, "
                   "\"bytes_sent\": %d, \"bytes_received\": %d, \"checksum\": %.9g, "
                   "\"cpu_seconds\": %.3f, \"audits_passed\": %d, \"audits\": %d}",
                   FLAGS_index, result->fraction_averaged, absl::ToDoubleSeconds(result->elapsed),
                   result->bytes_sent, result->bytes_received, checksum, cpu, passed,
                   static_cast<int>(result->audits.size()))
            << std::endl;
  std::this_thread::sleep_for(std::chrono::milliseconds(FLAGS_linger_ms));
  (*host)->Shutdown(absl::Seconds(1));
  return absl::OkStatus();
}

}  // namespace

int main(int argc, char** argv) {
  return dd::RunMain("averaging_member --spec_file=S --index=I --length=N", argc, argv,
                     [](int, char**) { return Run(); });
}
