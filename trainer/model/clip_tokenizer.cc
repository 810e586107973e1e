#include "trainer/model/clip_tokenizer.h"

#include <re2/re2.h>
#include <utf8proc.h>

#include <algorithm>
#include <climits>
#include <cstdlib>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/io/file_util.h"

namespace dd::model {
namespace {

constexpr char kEndOfWord[] = "</w>";
// Unicode White_Space (RE2's \s is ASCII only).
constexpr char kSpace[] = R"([\t\n\x0B\f\r\x{85}\p{Z}])";

std::string CodepointToUtf8(int32_t cp) {
  uint8_t buf[4];
  utf8proc_ssize_t n = utf8proc_encode_char(cp, buf);
  return std::string(reinterpret_cast<char*>(buf), n);
}

// GPT-2's reversible map from bytes to printable characters.
std::vector<std::string> BytesToUnicode() {
  std::vector<int> printable;
  for (int b = '!'; b <= '~'; ++b) printable.push_back(b);
  for (int b = 0xA1; b <= 0xAC; ++b) printable.push_back(b);
  for (int b = 0xAE; b <= 0xFF; ++b) printable.push_back(b);
  std::vector<std::string> out(256);
  int extra = 0;
  for (int b = 0; b < 256; ++b) {
    bool keep = std::find(printable.begin(), printable.end(), b) != printable.end();
    out[b] = CodepointToUtf8(keep ? b : 256 + extra++);
  }
  return out;
}

// Replaces invalid UTF-8 by U+FFFD.
std::string SanitizeUtf8(absl::string_view in) {
  std::string out;
  const auto* p = reinterpret_cast<const utf8proc_uint8_t*>(in.data());
  utf8proc_ssize_t left = in.size();
  while (left > 0) {
    utf8proc_int32_t cp;
    utf8proc_ssize_t n = utf8proc_iterate(p, left, &cp);
    if (n <= 0) {
      out += "\xEF\xBF\xBD";
      ++p;
      --left;
      continue;
    }
    out.append(reinterpret_cast<const char*>(p), n);
    p += n;
    left -= n;
  }
  return out;
}

std::string NfcLower(const std::string& text) {
  utf8proc_uint8_t* nfc = utf8proc_NFC(reinterpret_cast<const utf8proc_uint8_t*>(text.c_str()));
  std::string normalized = nfc ? reinterpret_cast<char*>(nfc) : text;
  std::free(nfc);
  std::string out;
  const auto* p = reinterpret_cast<const utf8proc_uint8_t*>(normalized.data());
  utf8proc_ssize_t left = normalized.size();
  while (left > 0) {
    utf8proc_int32_t cp;
    utf8proc_ssize_t n = utf8proc_iterate(p, left, &cp);
    if (n <= 0) break;
    out += CodepointToUtf8(utf8proc_tolower(cp));
    p += n;
    left -= n;
  }
  return out;
}

absl::StatusOr<nlohmann::json> ReadJson(const std::string& path) {
  auto text = ReadFileToString(path);
  if (!text.ok()) return text.status();
  nlohmann::json j = nlohmann::json::parse(*text, nullptr, false);
  if (j.is_discarded()) return absl::InvalidArgumentError(absl::StrCat(path, " is not valid JSON"));
  return j;
}

// A token setting may be a string or {"content": "..."}.
std::string TokenContent(const nlohmann::json& v) {
  if (v.is_string()) return v.get<std::string>();
  if (v.is_object() && v.contains("content") && v["content"].is_string()) {
    return v["content"].get<std::string>();
  }
  return "";
}

}  // namespace

ClipTokenizer::ClipTokenizer() = default;
ClipTokenizer::~ClipTokenizer() = default;

absl::StatusOr<std::unique_ptr<ClipTokenizer>> ClipTokenizer::Load(const std::string& dir) {
  std::unique_ptr<ClipTokenizer> t(new ClipTokenizer());
  auto vocab = ReadJson(dir + "/vocab.json");
  if (!vocab.ok()) return vocab.status();
  if (!vocab->is_object()) return absl::InvalidArgumentError(dir + "/vocab.json is not an object");
  for (auto it = vocab->begin(); it != vocab->end(); ++it) {
    if (!it->is_number_integer()) {
      return absl::InvalidArgumentError(absl::StrCat(dir, "/vocab.json: id of \"", it.key(),
                                                     "\" is not an integer"));
    }
    t->vocab_[it.key()] = it->get<int>();
  }
  auto merges = ReadFileToString(dir + "/merges.txt");
  if (!merges.ok()) return merges.status();
  int rank = 0;
  for (absl::string_view line : absl::StrSplit(*merges, '\n')) {
    if (line.empty() || line.front() == '#') continue;
    std::vector<std::string> pair = absl::StrSplit(line, ' ');
    if (pair.size() != 2) {
      return absl::InvalidArgumentError(
          absl::StrCat(dir, "/merges.txt: line \"", line, "\" is not two symbols"));
    }
    t->merge_rank_.emplace(std::make_pair(pair[0], pair[1]), rank++);
  }
  // Special tokens and lengths: tokenizer_config.json, then
  // special_tokens_map.json for what it lacks.
  std::string bos = "<|startoftext|>", eos = "<|endoftext|>", pad, unk;
  for (const char* file : {"/tokenizer_config.json", "/special_tokens_map.json"}) {
    auto cfg = ReadJson(dir + file);
    if (!cfg.ok()) {
      if (cfg.status().code() == absl::StatusCode::kNotFound) continue;
      return cfg.status();
    }
    if (cfg->contains("bos_token") && !TokenContent((*cfg)["bos_token"]).empty()) bos = TokenContent((*cfg)["bos_token"]);
    if (cfg->contains("eos_token") && !TokenContent((*cfg)["eos_token"]).empty()) eos = TokenContent((*cfg)["eos_token"]);
    if (pad.empty() && cfg->contains("pad_token")) pad = TokenContent((*cfg)["pad_token"]);
    if (unk.empty() && cfg->contains("unk_token")) unk = TokenContent((*cfg)["unk_token"]);
    if (cfg->contains("model_max_length") && (*cfg)["model_max_length"].is_number_integer()) {
      int64_t m = (*cfg)["model_max_length"].get<int64_t>();
      if (m > 2 && m < 100000) t->model_max_length_ = static_cast<int>(m);
    }
  }
  if (pad.empty()) pad = eos;
  if (unk.empty()) unk = eos;
  auto id_of = [&](const std::string& token, int* id) -> absl::Status {
    auto it = t->vocab_.find(token);
    if (it == t->vocab_.end()) {
      return absl::InvalidArgumentError(
          absl::StrCat(dir, ": special token \"", token, "\" is not in vocab.json"));
    }
    *id = it->second;
    return absl::OkStatus();
  };
  for (auto [token, id] : {std::pair<std::string, int*>{bos, &t->bos_id_}, {eos, &t->eos_id_},
                           {pad, &t->pad_id_}, {unk, &t->unk_id_}}) {
    if (absl::Status s = id_of(token, id); !s.ok()) return s;
  }
  // Every named special token is matched in the raw text, as transformers
  // registers them (special added tokens, not normalized): with SD 2.x's
  // pad token "!", a "!" in a prompt is the pad token's id, not the BPE
  // symbol "!</w>".
  for (auto [content, id] : {std::pair<std::string, int>{bos, t->bos_id_}, {eos, t->eos_id_},
                             {pad, t->pad_id_}, {unk, t->unk_id_}}) {
    bool known = false;
    for (const auto& [c, i] : t->special_) known |= c == content;
    if (!content.empty() && !known) t->special_.push_back({content, id});
  }
  t->byte_to_unicode_ = BytesToUnicode();
  std::string not_space_letter_number = absl::StrCat(
      R"([^\t\n\x0B\f\r\x{85}\p{Z}\p{L}\p{N}]+)");
  t->pieces_ = std::make_unique<re2::RE2>(absl::StrCat(
      "('s|'t|'re|'ve|'m|'ll|'d|[\\p{L}]+|[\\p{N}]|", not_space_letter_number, ")"));
  t->whitespace_ = std::make_unique<re2::RE2>(absl::StrCat(kSpace, "+"));
  if (!t->pieces_->ok() || !t->whitespace_->ok()) {
    return absl::InternalError("tokenizer regular expressions do not compile");
  }
  return t;
}

void ClipTokenizer::Bpe(const std::string& piece, std::vector<int>* ids) const {
  {
    absl::MutexLock lock(&cache_mu_);
    auto it = cache_.find(piece);
    if (it != cache_.end()) {
      ids->insert(ids->end(), it->second.begin(), it->second.end());
      return;
    }
  }
  // Symbols: the byte-level characters of the piece, the last one ending
  // the word.
  std::vector<std::string> word;
  for (unsigned char b : piece) word.push_back(byte_to_unicode_[b]);
  if (word.empty()) return;
  word.back() += kEndOfWord;
  while (word.size() > 1) {
    int best = INT_MAX;
    size_t at = 0;
    for (size_t i = 0; i + 1 < word.size(); ++i) {
      auto it = merge_rank_.find({word[i], word[i + 1]});
      if (it != merge_rank_.end() && it->second < best) {
        best = it->second;
        at = i;
      }
    }
    if (best == INT_MAX) break;
    // Merge every occurrence of the best pair, left to right.
    std::string first = word[at], second = word[at + 1];
    std::vector<std::string> merged;
    for (size_t i = 0; i < word.size();) {
      if (i + 1 < word.size() && word[i] == first && word[i + 1] == second) {
        merged.push_back(first + second);
        i += 2;
      } else {
        merged.push_back(word[i]);
        ++i;
      }
    }
    word.swap(merged);
  }
  std::vector<int> out;
  for (const std::string& symbol : word) {
    auto it = vocab_.find(symbol);
    out.push_back(it == vocab_.end() ? unk_id_ : it->second);
  }
  ids->insert(ids->end(), out.begin(), out.end());
  absl::MutexLock lock(&cache_mu_);
  if (cache_.size() < 100000) cache_.emplace(piece, std::move(out));
}

void ClipTokenizer::EncodeText(absl::string_view text, std::vector<int>* ids) const {
  std::string normalized = NfcLower(std::string(text));
  RE2::GlobalReplace(&normalized, *whitespace_, " ");
  re2::StringPiece input(normalized);
  re2::StringPiece piece;
  while (RE2::FindAndConsume(&input, *pieces_, &piece)) {
    if (piece.empty()) {
      if (input.empty()) break;
      input.remove_prefix(1);
      continue;
    }
    Bpe(std::string(piece.data(), piece.size()), ids);
  }
}

std::vector<int> ClipTokenizer::Encode(absl::string_view raw) const {
  std::string text = SanitizeUtf8(raw);
  std::vector<int> ids = {bos_id_};
  // Special tokens are matched in the raw text, before normalization.
  size_t pos = 0;
  while (pos <= text.size()) {
    size_t next = std::string::npos;
    int id = -1;
    size_t len = 0;
    // The leftmost match; of several there, the longest.
    for (const auto& [content, special_id] : special_) {
      size_t at = text.find(content, pos);
      if (at < next || (at == next && at != std::string::npos && content.size() > len)) {
        next = at;
        id = special_id;
        len = content.size();
      }
    }
    EncodeText(absl::string_view(text).substr(pos, next == std::string::npos ? std::string::npos
                                                                             : next - pos),
               &ids);
    if (next == std::string::npos) break;
    ids.push_back(id);
    pos = next + len;
  }
  ids.push_back(eos_id_);
  return ids;
}

std::vector<int> ClipTokenizer::EncodePadded(absl::string_view text, int max_length) const {
  if (max_length <= 0) max_length = model_max_length_;
  std::vector<int> ids = Encode(text);
  if (static_cast<int>(ids.size()) > max_length) {
    ids.resize(max_length);
    ids.back() = eos_id_;
  }
  ids.resize(max_length, pad_id_);
  return ids;
}

}  // namespace dd::model
