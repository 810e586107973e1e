// dd_grpcurl: the part of grpcurl (github.com/fullstorydev/grpcurl) that
// inspecting this project's servers needs, with the same flags, for machines
// without grpcurl (Debian does not package it). It knows none of the
// project's protos: every type comes from the server's reflection service.
//
//   dd_grpcurl [-plaintext | -cacert CA.pem [-cert C.pem -key K.pem]]
//              [-H 'name: value']... [-d JSON] [-max-time SECONDS]
//              ADDRESS (list | package.Service/Method)
//
// Prints the services (list) or each response as JSON. Exit status: 0 on
// success, 1 when the call fails (its status on stderr), 2 on bad usage.
#include <cstdlib>
#include <iostream>
#include <string>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "common/rpc/channel.h"
#include "common/rpc/reflection_client.h"
#include "common/rpc/security.h"

namespace {

constexpr char kUsage[] =
    "usage: dd_grpcurl [-plaintext | -cacert CA.pem [-cert C.pem -key K.pem]]\n"
    "                  [-H 'name: value']... [-d JSON] [-max-time SECONDS]\n"
    "                  ADDRESS (list | package.Service/Method)\n";

int Usage(const std::string& problem) {
  std::cerr << "dd_grpcurl: " << problem << "\n" << kUsage;
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  dd::SecurityConfig security;
  // Headers are the caller's: no token of our own, as with grpcurl.
  security.allow_unauthenticated = true;
  bool plaintext = false;
  dd::CallHeaders headers;
  std::string data;
  double max_time_s = 10;
  std::vector<std::string> positional;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    // grpcurl accepts -flag and --flag, and -flag=value.
    if (absl::StartsWith(arg, "--")) arg = arg.substr(1);
    std::string value;
    bool has_inline_value = false;
    if (absl::StartsWith(arg, "-") && arg.find('=') != std::string::npos) {
      value = arg.substr(arg.find('=') + 1);
      arg = arg.substr(0, arg.find('='));
      has_inline_value = true;
    }
    auto next = [&](std::string* out) {
      if (has_inline_value) {
        *out = value;
        return true;
      }
      if (i + 1 >= argc) return false;
      *out = argv[++i];
      return true;
    };
    if (arg == "-plaintext") {
      plaintext = true;
    } else if (arg == "-cacert" || arg == "-cert" || arg == "-key" || arg == "-H" ||
               arg == "-d" || arg == "-max-time") {
      std::string v;
      if (!next(&v)) return Usage(absl::StrCat(arg, " needs a value"));
      if (arg == "-cacert") security.tls_ca_file = v;
      if (arg == "-cert") security.tls_cert_file = v;
      if (arg == "-key") security.tls_key_file = v;
      if (arg == "-d") data = v;
      if (arg == "-max-time" && (!absl::SimpleAtod(v, &max_time_s) || max_time_s <= 0)) {
        return Usage(absl::StrCat("bad -max-time ", v));
      }
      if (arg == "-H") {
        size_t colon = v.find(':');
        if (colon == std::string::npos || colon == 0) {
          return Usage(absl::StrCat("header \"", v, "\" is not 'name: value'"));
        }
        headers.emplace_back(absl::AsciiStrToLower(absl::StripAsciiWhitespace(v.substr(0, colon))),
                             std::string(absl::StripAsciiWhitespace(v.substr(colon + 1))));
      }
    } else if (absl::StartsWith(arg, "-") && arg.size() > 1) {
      return Usage(absl::StrCat("unsupported flag ", arg));
    } else {
      positional.push_back(argv[i]);
    }
  }
  if (positional.size() != 2) return Usage("needs ADDRESS and list or a method");
  if (plaintext == security.UsesTls()) {
    return Usage("give either -plaintext or -cacert (as grpcurl, TLS is the default; "
                 "this subset needs the CA to verify the server)");
  }
  // -plaintext is the caller's explicit choice, to any address (grpcurl's).
  security.insecure = plaintext;
  auto channel = dd::MakeChannel(positional[0], security);
  if (!channel.ok()) {
    std::cerr << channel.status() << "\n";
    return 1;
  }
  absl::Duration timeout = absl::Seconds(max_time_s);
  if (positional[1] == "list") {
    auto names = dd::ListServicesByReflection(*channel, timeout, headers);
    if (!names.ok()) {
      std::cerr << names.status() << "\n";
      return 1;
    }
    for (const auto& n : *names) std::cout << n << "\n";
    return 0;
  }
  auto replies = dd::CallByReflection(*channel, positional[1], data, headers, timeout);
  if (!replies.ok()) {
    std::cerr << replies.status() << "\n";
    return 1;
  }
  for (const auto& r : *replies) std::cout << r;
  return 0;
}
