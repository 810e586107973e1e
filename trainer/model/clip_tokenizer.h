// ClipTokenizer: the CLIP BPE tokenizer of Stable Diffusion's text encoders,
// read from a diffusers `tokenizer/` folder (vocab.json, merges.txt,
// tokenizer_config.json / special_tokens_map.json), computing the ids of the
// `tokenizers` backend of transformers:
//   the named special tokens (bos, eos, pad, unk) split out of the raw text
//   first, leftmost then longest (SD 2.x pads with "!", so a "!" in a
//   prompt is that token);
//   NFC, every run of whitespace -> one space, lowercase (utf8proc);
//   pieces: 's 't 're 've 'm 'll 'd | letters+ | one digit | other symbols+
//     (RE2 with Unicode classes; everything else, i.e. spaces, dropped);
//   byte-level alphabet; BPE by merge rank with "</w>" ending each word;
//   <|startoftext|> ... <|endoftext|>; truncation and padding with the
//   tokenizer's own pad token (SD1: <|endoftext|>, SD2: "!").
#ifndef TRAINER_MODEL_CLIP_TOKENIZER_H_
#define TRAINER_MODEL_CLIP_TOKENIZER_H_

#include <map>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"

namespace re2 {
class RE2;
}

namespace dd::model {

class ClipTokenizer {
 public:
  // Loads `dir`. NotFound naming the missing file; InvalidArgument for a
  // malformed vocab/merges/config or special tokens missing from the vocab.
  static absl::StatusOr<std::unique_ptr<ClipTokenizer>> Load(const std::string& dir);
  ~ClipTokenizer();

  // BOS, the text's tokens, EOS: no truncation, no padding. Invalid UTF-8 is
  // replaced by U+FFFD first.
  std::vector<int> Encode(absl::string_view text) const;

  // Truncated to `max_length` (BOS + up to max_length-2 tokens + EOS) and
  // padded with the pad token to exactly `max_length` (0: the tokenizer's
  // model_max_length).
  std::vector<int> EncodePadded(absl::string_view text, int max_length = 0) const;

  int bos_id() const { return bos_id_; }
  int eos_id() const { return eos_id_; }
  int pad_id() const { return pad_id_; }
  int model_max_length() const { return model_max_length_; }
  size_t vocab_size() const { return vocab_.size(); }

 private:
  ClipTokenizer();
  void EncodeText(absl::string_view text, std::vector<int>* ids) const;
  void Bpe(const std::string& word, std::vector<int>* ids) const;

  std::unordered_map<std::string, int> vocab_;
  std::map<std::pair<std::string, std::string>, int> merge_rank_;
  std::vector<std::string> byte_to_unicode_;  // 256 UTF-8 strings
  std::unique_ptr<re2::RE2> pieces_;
  std::unique_ptr<re2::RE2> whitespace_;
  std::vector<std::pair<std::string, int>> special_;  // content -> id
  int bos_id_ = 0, eos_id_ = 0, pad_id_ = 0, unk_id_ = 0;
  int model_max_length_ = 77;

  mutable absl::Mutex cache_mu_;
  mutable std::unordered_map<std::string, std::vector<int>> cache_ ABSL_GUARDED_BY(cache_mu_);
};

}  // namespace dd::model

#endif  // TRAINER_MODEL_CLIP_TOKENIZER_H_
