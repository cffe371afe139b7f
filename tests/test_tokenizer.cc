// Tokenizer tests. The oracle is fixtures/tokenizers/golden.json (HF tokenizers 0.23.2 ids and
// decoded text for 52 strings x 3 tokenizers) and llama-13m/reference-outputs.json (prompt ids
// with BOS, from transformers). Beyond the golden file: incremental decoding against full
// decoding (golden cases and random id sequences that split UTF-8 characters), special-token
// parsing, chat rendering, pipeline variants (Metaspace, Split behaviours, added-token flags)
// on small hand-made tokenizer.json files, and load errors. Fixture tests skip when the
// fixtures are absent.
#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "engine/text_file.h"
#include "engine/tokenizer.h"
#include "engine/unicode.h"
#include "tests/test_support.h"

namespace awqd {
namespace {

using json = nlohmann::json;
using Ids = std::vector<std::int32_t>;

// The three golden tokenizers, by golden.json's names, loaded once per process.
const std::map<std::string, std::string>& tokenizer_dirs() {
  static const std::map<std::string, std::string> dirs = {
      {"llama-13m", "llama-13m"}, {"qwen3", "tokenizers/qwen3"}, {"llama3", "tokenizers/llama3"}};
  return dirs;
}

const Tokenizer& cached_tokenizer(const std::filesystem::path& dir) {
  static std::map<std::filesystem::path, Tokenizer> cache;
  auto it = cache.find(dir);
  if (it == cache.end()) it = cache.emplace(dir, Tokenizer::load(dir)).first;
  return it->second;
}

#define REQUIRE_TOKENIZER(var, name)                          \
  AWQD_REQUIRE_FIXTURE(var##_dir, tokenizer_dirs().at(name)); \
  const Tokenizer& var = cached_tokenizer(var##_dir)

// The first `bytes` bytes of a corpus, cut at a line end (never inside a character).
std::string corpus_head(const std::filesystem::path& path, std::size_t bytes) {
  const std::string text = read_file(path);
  return text.substr(0, text.rfind('\n', bytes) + 1);
}

json load_golden() { return json::parse(read_file(test::fixture("tokenizers/golden.json"))); }

// Streams ids through an IncrementalDecoder; checks every piece is valid UTF-8.
std::string stream_decode(const Tokenizer& tok, const Ids& ids, bool skip_special,
                          std::vector<std::string>* pieces = nullptr) {
  IncrementalDecoder dec(tok, skip_special);
  std::string out;
  for (const std::int32_t id : ids) {
    const std::string piece = dec.push(id);
    EXPECT_TRUE(unicode::is_valid_utf8(piece));
    if (pieces != nullptr) pieces->push_back(piece);
    out += piece;
  }
  const std::string tail = dec.flush();
  EXPECT_TRUE(unicode::is_valid_utf8(tail));
  if (pieces != nullptr) pieces->push_back(tail);
  return out + tail;
}

std::string escaped(const std::string& s) { return json(s).dump(); }

// ---- Golden ids and round trips ---------------------------------------------------------------

class GoldenTest : public ::testing::TestWithParam<std::string> {};

TEST_P(GoldenTest, EncodeMatchesReferenceIdForId) {
  AWQD_REQUIRE_FIXTURE(golden, "tokenizers/golden.json");
  REQUIRE_TOKENIZER(tok, GetParam());
  const json g = load_golden();
  int checked = 0;
  for (const json& c : g["cases"]) {
    const std::string text = c["text"];
    const Ids expected = c[GetParam()].get<Ids>();
    EXPECT_EQ(tok.encode(text, /*add_special_tokens=*/false), expected) << "text " << escaped(text);
    ++checked;
  }
  EXPECT_EQ(checked, 52);
}

TEST_P(GoldenTest, DecodeMatchesReferenceText) {
  AWQD_REQUIRE_FIXTURE(golden, "tokenizers/golden.json");
  REQUIRE_TOKENIZER(tok, GetParam());
  for (const json& c : load_golden()["cases"]) {
    const Ids ids = c[GetParam()].get<Ids>();
    const std::string expected = c[GetParam() + ":decoded"];
    // The reference decoded with skip_special_tokens=True.
    EXPECT_EQ(tok.decode(ids, /*skip_special_tokens=*/true), expected)
        << "ids of " << escaped(c["text"]);
  }
}

TEST_P(GoldenTest, IncrementalDecodeEqualsFullDecode) {
  AWQD_REQUIRE_FIXTURE(golden, "tokenizers/golden.json");
  REQUIRE_TOKENIZER(tok, GetParam());
  for (const json& c : load_golden()["cases"]) {
    const Ids ids = c[GetParam()].get<Ids>();
    for (const bool skip : {false, true}) {
      EXPECT_EQ(stream_decode(tok, ids, skip), tok.decode(ids, skip))
          << "ids of " << escaped(c["text"]) << " skip_special " << skip;
    }
  }
}

TEST_P(GoldenTest, IncrementalDecodeOfRandomIds) {
  REQUIRE_TOKENIZER(tok, GetParam());
  std::mt19937 rng(1234);
  // Low ids are single bytes/characters in all three vocabularies (byte tokens <0xXX> are 3..258
  // in llama-13m, byte code points 0..255 in the byte-level ones): they split UTF-8 characters.
  std::uniform_int_distribution<std::int32_t> any(0, tok.vocab_size() - 1);
  std::uniform_int_distribution<std::int32_t> low(0, 300);
  std::uniform_int_distribution<int> len(1, 40);
  for (int round = 0; round < 300; ++round) {
    Ids ids(len(rng));
    for (auto& id : ids) id = (rng() % 3 == 0) ? any(rng) : low(rng);
    for (const bool skip : {false, true}) {
      ASSERT_EQ(stream_decode(tok, ids, skip), tok.decode(ids, skip))
          << "round " << round << " skip_special " << skip;
    }
  }
}

TEST_P(GoldenTest, IncrementalDecodeAfterPrimeKeepsSpacing) {
  REQUIRE_TOKENIZER(tok, GetParam());
  const Ids prompt = tok.encode("Elizabeth looked at Mr. Darcy and", true);
  const Ids reply = tok.encode(" she smiled: naïve café, 你好 🦙.", false);
  IncrementalDecoder dec(tok, true);
  dec.prime(prompt);
  std::string streamed;
  for (const std::int32_t id : reply) streamed += dec.push(id);
  streamed += dec.flush();
  Ids all = prompt;
  all.insert(all.end(), reply.begin(), reply.end());
  EXPECT_EQ(tok.decode(prompt, true) + streamed, tok.decode(all, true));
}

TEST_P(GoldenTest, RoundTripOfCorpusParagraphs) {
  REQUIRE_TOKENIZER(tok, GetParam());
  AWQD_REQUIRE_FIXTURE(corpus, "text/pydoc-heldout.txt");
  const std::string text = corpus_head(corpus, 20000);
  const Ids ids = tok.encode(text, false);
  std::string decoded = tok.decode(ids, true);
  // SentencePiece adds a leading "▁" that decoding strips again; byte-level is exact.
  EXPECT_EQ(decoded, text);
  EXPECT_EQ(stream_decode(tok, ids, true), decoded);
}

INSTANTIATE_TEST_SUITE_P(Tokenizers, GoldenTest, ::testing::Values("llama-13m", "qwen3", "llama3"),
                         [](const auto& info) {
                           std::string name = info.param;
                           std::erase(name, '-');
                           return name;
                         });

// ---- Special tokens, BOS, vocabulary ------------------------------------------------------------

TEST(Tokenizer, Llama13mAddsBosLikeTheReference) {
  REQUIRE_TOKENIZER(tok, "llama-13m");
  AWQD_REQUIRE_FIXTURE(ref_path, "llama-13m/reference-outputs.json");
  EXPECT_TRUE(tok.add_bos());
  EXPECT_EQ(tok.bos_id(), 1);
  EXPECT_EQ(tok.eos_id(), 2);
  EXPECT_EQ(tok.vocab_size(), 32000);
  const json ref = json::parse(read_file(ref_path));
  for (const json& p : ref["prompts"]) {
    EXPECT_EQ(tok.encode(p["prompt"].get<std::string>(), true), p["ids"].get<Ids>());
    EXPECT_EQ(tok.decode(p["greedy_ids"].get<Ids>(), true), p["greedy_text"].get<std::string>());
  }
}

TEST(Tokenizer, ByteLevelFixturesAddNoBos) {
  REQUIRE_TOKENIZER(qwen, "qwen3");
  REQUIRE_TOKENIZER(llama3, "llama3");
  EXPECT_FALSE(qwen.add_bos());
  EXPECT_EQ(qwen.bos_id(), std::nullopt);
  EXPECT_EQ(qwen.eos_id(), 151645);  // <|im_end|>
  EXPECT_EQ(qwen.vocab_size(), 151669);
  EXPECT_EQ(qwen.encode("Hello world", true), (Ids{9707, 1879}));
  // This llama3 file's post-processor is ByteLevel only and its config has no add_bos_token.
  EXPECT_FALSE(llama3.add_bos());
  EXPECT_EQ(llama3.bos_id(), 128000);
  EXPECT_EQ(llama3.eos_id(), 128001);
  EXPECT_EQ(llama3.vocab_size(), 128256);
}

TEST(Tokenizer, SpecialTokensParsedOnlyWhenAsked) {
  REQUIRE_TOKENIZER(qwen, "qwen3");
  const std::string text = "<|im_start|>user\nHi<|im_end|>";
  EXPECT_EQ(qwen.encode(text, false), (Ids{151644, 872, 198, 13048, 151645}));
  const Ids literal = qwen.encode(text, false, /*parse_special=*/false);
  EXPECT_EQ(std::count(literal.begin(), literal.end(), 151644), 0);
  EXPECT_EQ(qwen.decode(literal), text);
  EXPECT_TRUE(qwen.is_special(151644));
  EXPECT_FALSE(qwen.is_special(872));
  EXPECT_EQ(qwen.token_to_id("<|im_start|>"), 151644);
  EXPECT_EQ(qwen.id_to_token(151644), "<|im_start|>");
  EXPECT_EQ(qwen.id_to_token(9707), "Hello");
  EXPECT_EQ(qwen.id_to_token(21927), "\xC4\xA0Hello");  // "ĠHello"
  EXPECT_EQ(qwen.id_to_token(999999), "");
  // Non-special added tokens (<think>) are matched even when special ones are not.
  const Ids think = qwen.encode("<think>x</think>", false, false);
  EXPECT_EQ(think.front(), *qwen.token_to_id("<think>"));
  EXPECT_FALSE(qwen.is_special(think.front()));
  // Decoding keeps special tokens unless told to skip them.
  EXPECT_EQ(qwen.decode(Ids{151644, 872, 198, 13048, 151645}), text);
  EXPECT_EQ(qwen.decode(Ids{151644, 872, 198, 13048, 151645}, true), "user\nHi");

  REQUIRE_TOKENIZER(llama, "llama-13m");
  EXPECT_EQ(llama.encode("<s>Hi</s>", false).front(), 1);
  EXPECT_NE(llama.encode("<s>Hi</s>", false, false).front(), 1);
  EXPECT_EQ(llama.decode(llama.encode("<s>Hi</s>", false, false)), "<s>Hi</s>");
}

TEST(Tokenizer, ByteFallbackSplitsCharactersAndStreamsThemWhole) {
  REQUIRE_TOKENIZER(tok, "llama-13m");
  // "🦙" is not in the vocabulary: four <0xXX> tokens (28705 is the leading "▁").
  const Ids ids = tok.encode("🦙", false);
  ASSERT_EQ(ids, (Ids{28705, 243, 162, 169, 156}));
  std::vector<std::string> pieces;
  EXPECT_EQ(stream_decode(tok, ids, false, &pieces), "🦙");
  // No piece holds part of the character: it comes out whole, once the run is over.
  for (const std::string& p : pieces) EXPECT_TRUE(p.empty() || p == "🦙" || p == " ");
  // An invalid run becomes one U+FFFD per byte (HF's ByteFallback), streamed or not.
  const Ids broken = {28705, 243, 162, 415};  // "▁", two bytes of 4, "▁The"
  EXPECT_EQ(tok.decode(broken), "\xEF\xBF\xBD\xEF\xBF\xBD The");
  EXPECT_EQ(stream_decode(tok, broken, false), tok.decode(broken));
}

TEST(Tokenizer, ByteLevelStreamingHoldsUnfinishedCharacters) {
  REQUIRE_TOKENIZER(tok, "llama3");
  const Ids ids = tok.encode("🦙!", false);  // the emoji is split over several tokens
  ASSERT_GT(ids.size(), 2u);
  IncrementalDecoder dec(tok);
  std::string out;
  for (std::size_t i = 0; i + 1 < ids.size(); ++i) out += dec.push(ids[i]);
  EXPECT_EQ(out, "🦙");
  EXPECT_EQ(dec.push(ids.back()), "!");
  // Ending inside a character: flush() gives the U+FFFD that decode() gives.
  IncrementalDecoder cut(tok);
  EXPECT_EQ(cut.push(ids[0]), "");
  EXPECT_EQ(cut.flush(), tok.decode(Ids{ids[0]}));
  EXPECT_EQ(cut.flush(), "");
}

TEST(Tokenizer, PrimeOnAPromptThatEndsInsideACharacter) {
  REQUIRE_TOKENIZER(tok, "llama3");
  Ids ids = tok.encode("Hi 🦙!", false);
  ASSERT_GT(ids.size(), 3u);
  // The prompt stops inside the emoji: its bytes come back with the generated completion.
  const Ids prompt(ids.begin(), ids.end() - 2);
  IncrementalDecoder dec(tok);
  dec.prime(prompt);
  std::string streamed = dec.push(ids[ids.size() - 2]);
  streamed += dec.push(ids.back());
  streamed += dec.flush();
  EXPECT_EQ(streamed, " 🦙!");
}

TEST(Tokenizer, ConcurrentEncodesAgree) {
  REQUIRE_TOKENIZER(tok, "qwen3");
  AWQD_REQUIRE_FIXTURE(corpus, "text/austen-heldout.txt");
  const std::string text = corpus_head(corpus, 60000);
  std::vector<std::string> lines;
  for (std::size_t b = 0, e; b < text.size(); b = e + 1) {
    e = text.find('\n', b);
    lines.push_back(text.substr(b, e - b));
  }
  // Reference ids from a fresh tokenizer (empty word cache), then four threads that fill and
  // read the shared cache of `tok` at once.
  const Tokenizer fresh = Tokenizer::load(tok_dir);
  std::vector<Ids> expected;
  for (const std::string& l : lines) expected.push_back(fresh.encode(l, false));
  std::vector<std::thread> threads;
  std::atomic<int> mismatches{0};
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (std::size_t i = 0; i < lines.size(); ++i) {
        const std::size_t k = (i + t * lines.size() / 4) % lines.size();
        if (tok.encode(lines[k], false) != expected[k]) ++mismatches;
      }
    });
  }
  for (std::thread& th : threads) th.join();
  EXPECT_EQ(mismatches.load(), 0);
}

TEST(Tokenizer, RejectsInvalidUtf8Text) {
  REQUIRE_TOKENIZER(tok, "qwen3");
  EXPECT_THROW(tok.encode("ok \xC3(", false), std::invalid_argument);
}

TEST(Tokenizer, LongPromptEncodesQuickly) {
  REQUIRE_TOKENIZER(tok, "llama3");
  AWQD_REQUIRE_FIXTURE(corpus, "text/pydoc-heldout.txt");
  const std::string text = corpus_head(corpus, 16000);
  const Ids ids = tok.encode(text, false);
  EXPECT_GT(ids.size(), 3000u);
  EXPECT_EQ(tok.decode(ids), text);
}

// ---- Chat templates -------------------------------------------------------------------------

TEST(Chat, DetectsFormatFromTemplateAndTokens) {
  REQUIRE_TOKENIZER(qwen, "qwen3");
  REQUIRE_TOKENIZER(llama3, "llama3");
  REQUIRE_TOKENIZER(llama13m, "llama-13m");
  EXPECT_EQ(detect_chat_format(qwen), ChatFormat::kChatML);
  EXPECT_EQ(detect_chat_format(llama3), ChatFormat::kLlama3);
  EXPECT_EQ(detect_chat_format(llama13m), ChatFormat::kPlain);
}

TEST(Chat, RendersEachFormat) {
  REQUIRE_TOKENIZER(qwen, "qwen3");
  REQUIRE_TOKENIZER(llama3, "llama3");
  REQUIRE_TOKENIZER(llama13m, "llama-13m");
  const std::vector<ChatMessage> messages = {{"system", "You are terse."},
                                             {"user", "  What is 2+2? "},
                                             {"assistant", "4"},
                                             {"user", "And 3+3?"}};
  EXPECT_EQ(render_chat(ChatFormat::kChatML, messages, qwen),
            "<|im_start|>system\nYou are terse.<|im_end|>\n"
            "<|im_start|>user\n  What is 2+2? <|im_end|>\n"
            "<|im_start|>assistant\n4<|im_end|>\n"
            "<|im_start|>user\nAnd 3+3?<|im_end|>\n"
            "<|im_start|>assistant\n");
  EXPECT_EQ(render_chat(ChatFormat::kLlama3, messages, llama3),
            "<|begin_of_text|>"
            "<|start_header_id|>system<|end_header_id|>\n\nYou are terse.<|eot_id|>"
            "<|start_header_id|>user<|end_header_id|>\n\nWhat is 2+2?<|eot_id|>"
            "<|start_header_id|>assistant<|end_header_id|>\n\n4<|eot_id|>"
            "<|start_header_id|>user<|end_header_id|>\n\nAnd 3+3?<|eot_id|>"
            "<|start_header_id|>assistant<|end_header_id|>\n\n");
  EXPECT_EQ(render_chat(ChatFormat::kPlain, messages, llama13m),
            "System: You are terse.\n\nUser:   What is 2+2? \n\nAssistant: 4\n\n"
            "User: And 3+3?\n\nAssistant:");
  // Rendered ChatML tokenizes to the special ids (no BOS for Qwen).
  const Ids ids = qwen.encode(render_chat(ChatFormat::kChatML, {{{"user", "Hi"}}}, qwen), false);
  EXPECT_EQ(ids, (Ids{151644, 872, 198, 13048, 151645, 198, 151644, 77091, 198}));
  const Ids l3 = llama3.encode(render_chat(ChatFormat::kLlama3, {{{"user", "Hi"}}}, llama3), false);
  EXPECT_EQ(l3.front(), 128000);
  EXPECT_EQ(l3[1], 128006);
  EXPECT_THROW(render_chat(ChatFormat::kChatML, {}, qwen), std::invalid_argument);
}

// ---- Hand-made tokenizer.json files: variants the fixtures do not cover ------------------------

class TempDir {
 public:
  TempDir() {
    path_ = std::filesystem::temp_directory_path() /
            ("awqd-tok-" + std::to_string(::getpid()) + "-" + std::to_string(counter_++));
    std::filesystem::create_directories(path_);
  }
  ~TempDir() { std::filesystem::remove_all(path_); }
  const std::filesystem::path& path() const { return path_; }
  void write(const std::string& name, const std::string& data) const {
    std::ofstream(path_ / name, std::ios::binary) << data;
  }

 private:
  static inline int counter_ = 0;
  std::filesystem::path path_;
};

// A character-level vocabulary over "abc ▁" plus a few merges.
json toy_tokenizer() {
  json vocab = {{"a", 0},
                {"b", 1},
                {"c", 2},
                {" ", 3},
                {"\xE2\x96\x81", 4},
                {"ab", 5},
                {"abc", 6},
                {"\xE2\x96\x81"
                 "a",
                 7},
                {"1", 8},
                {"2", 9}};
  return {{"version", "1.0"},
          {"added_tokens", json::array()},
          {"normalizer", nullptr},
          {"pre_tokenizer", nullptr},
          {"post_processor", nullptr},
          {"decoder", nullptr},
          {"model",
           {{"type", "BPE"}, {"vocab", vocab}, {"merges", {"a b", "ab c", "\xE2\x96\x81 a"}}}}};
}

Tokenizer load_json(const TempDir& dir, const json& j) {
  dir.write("tokenizer.json", j.dump());
  return Tokenizer::load(dir.path());
}

TEST(TokenizerVariants, MetaspacePreTokenizerAndDecoder) {
  TempDir dir;
  json j = toy_tokenizer();
  j["pre_tokenizer"] = {{"type", "Metaspace"},
                        {"replacement", "\xE2\x96\x81"},
                        {"prepend_scheme", "first"},
                        {"split", true}};
  j["decoder"] = {
      {"type", "Metaspace"}, {"replacement", "\xE2\x96\x81"}, {"prepend_scheme", "first"}};
  const Tokenizer tok = load_json(dir, j);
  EXPECT_EQ(tok.encode("abc a", false), (Ids{4, 6, 7}));
  EXPECT_EQ(tok.decode(Ids{4, 6, 7}), "abc a");
  EXPECT_EQ(stream_decode(tok, Ids{4, 6, 7, 7, 4}, false), tok.decode(Ids{4, 6, 7, 7, 4}));
}

TEST(TokenizerVariants, StripDecoderAtTheEndHoldsStreamedText) {
  TempDir dir;
  json j = toy_tokenizer();
  j["decoder"] = {
      {"type", "Sequence"},
      {"decoders",
       {{{"type", "Fuse"}}, {{"type", "Strip"}, {"content", " "}, {"start", 1}, {"stop", 1}}}}};
  const Tokenizer tok = load_json(dir, j);
  const Ids ids = {3, 0, 3, 1, 3};  // " a b "
  EXPECT_EQ(tok.decode(ids), "a b");
  EXPECT_EQ(stream_decode(tok, ids, false), "a b");
  EXPECT_EQ(stream_decode(tok, Ids{0, 3, 3, 1}, false), "a  b");
}

TEST(TokenizerVariants, SplitBehaviours) {
  const std::vector<std::pair<std::string, Ids>> cases = {
      // "ab1ab2" split on digits.
      {"Removed", {5, 5}},
      {"Isolated", {5, 8, 5, 9}},
      {"MergedWithPrevious", {5, 8, 5, 9}},
      {"MergedWithNext", {5, 8, 5, 9}},
      {"Contiguous", {5, 8, 5, 9}},
  };
  for (const auto& [behavior, expected] : cases) {
    TempDir dir;
    json j = toy_tokenizer();
    j["pre_tokenizer"] = {{"type", "Split"},
                          {"pattern", {{"Regex", "\\d"}}},
                          {"behavior", behavior},
                          {"invert", false}};
    const Tokenizer tok = load_json(dir, j);
    EXPECT_EQ(tok.encode("ab1ab2", false), expected) << behavior;
  }
  // Merging changes what the model sees: with no merge across pieces, "abc" stays whole only
  // when the split keeps it in one piece.
  TempDir dir;
  json j = toy_tokenizer();
  j["pre_tokenizer"] = {{"type", "Split"},
                        {"pattern", {{"String", "b"}}},
                        {"behavior", "MergedWithPrevious"},
                        {"invert", false}};
  EXPECT_EQ(load_json(dir, j).encode("abc", false), (Ids{5, 2}));  // "ab" | "c"
  j["pre_tokenizer"]["behavior"] = "MergedWithNext";
  TempDir dir2;
  EXPECT_EQ(load_json(dir2, j).encode("abc", false), (Ids{0, 1, 2}));  // "a" | "bc"
}

TEST(TokenizerVariants, AddedTokenFlags) {
  TempDir dir;
  json j = toy_tokenizer();
  j["added_tokens"] = {
      {{"id", 10},
       {"content", "<x>"},
       {"special", true},
       {"lstrip", true},
       {"rstrip", true},
       {"single_word", false},
       {"normalized", false}},
      {{"id", 11},
       {"content", "cab"},
       {"special", false},
       {"lstrip", false},
       {"rstrip", false},
       {"single_word", true},
       {"normalized", false}},
  };
  j["post_processor"] = {
      {"type", "TemplateProcessing"},
      {"single",
       {{{"SpecialToken", {{"id", "<x>"}, {"type_id", 0}}}},
        {{"Sequence", {{"id", "A"}, {"type_id", 0}}}}}},
      {"special_tokens", {{"<x>", {{"id", "<x>"}, {"ids", {10}}, {"tokens", {"<x>"}}}}}}};
  const Tokenizer tok = load_json(dir, j);
  EXPECT_EQ(tok.encode("a  <x>  b", false), (Ids{0, 10, 1}));  // spaces stripped on both sides
  EXPECT_EQ(tok.encode("cab", false), (Ids{11}));
  EXPECT_EQ(tok.encode("a cab", false), (Ids{0, 3, 11}));
  EXPECT_EQ(tok.encode("acab", false), (Ids{0, 2, 5}));  // not a single word: plain BPE
  EXPECT_EQ(tok.encode("ab", true), (Ids{10, 5}));       // TemplateProcessing prefix
  EXPECT_TRUE(tok.add_bos());
  EXPECT_EQ(tok.bos_id(), 10);
  EXPECT_EQ(tok.vocab_size(), 12);
}

TEST(TokenizerVariants, ByteFallbackAndUnknownTokens) {
  TempDir dir;
  json j = toy_tokenizer();
  j["model"]["vocab"]["<unk>"] = 10;
  j["model"]["unk_token"] = "<unk>";
  j["model"]["fuse_unk"] = true;
  const Tokenizer tok = load_json(dir, j);
  EXPECT_EQ(tok.encode("axyb", false), (Ids{0, 10, 1}));  // "xy" fused into one <unk>
}

// ---- Errors ---------------------------------------------------------------------------------

std::string load_error(const std::filesystem::path& dir) {
  try {
    Tokenizer::load(dir);
  } catch (const std::runtime_error& e) {
    return e.what();
  }
  return "(no error)";
}

TEST(TokenizerErrors, MissingFile) {
  TempDir dir;
  const std::string msg = load_error(dir.path());
  EXPECT_NE(msg.find("no tokenizer in " + dir.path().string()), std::string::npos) << msg;
  EXPECT_NE(msg.find("tokenizer.json"), std::string::npos) << msg;
}

TEST(TokenizerErrors, CorruptJson) {
  TempDir dir;
  dir.write("tokenizer.json", "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0");
  const std::string msg = load_error(dir.path());
  EXPECT_NE(msg.find("tokenizer.json: invalid JSON"), std::string::npos) << msg;
}

TEST(TokenizerErrors, CorruptXz) {
  TempDir dir;
  dir.write("tokenizer.json.xz",
            "\xFD"
            "7zXZ garbage");
  const std::string msg = load_error(dir.path());
  EXPECT_NE(msg.find("tokenizer.json.xz"), std::string::npos) << msg;
  EXPECT_NE(msg.find("xz"), std::string::npos) << msg;
}

TEST(TokenizerErrors, BadStructure) {
  TempDir dir;
  dir.write("tokenizer.json", R"({"version": "1.0"})");
  EXPECT_NE(load_error(dir.path()).find("missing \"model\""), std::string::npos);

  json j = toy_tokenizer();
  j["model"]["merges"].push_back("a z");
  dir.write("tokenizer.json", j.dump());
  const std::string msg = load_error(dir.path());
  EXPECT_NE(msg.find("'z' is not in the vocabulary"), std::string::npos) << msg;

  j = toy_tokenizer();
  j["pre_tokenizer"] = {
      {"type", "Split"}, {"pattern", {{"Regex", "(unclosed"}}}, {"behavior", "Isolated"}};
  dir.write("tokenizer.json", j.dump());
  EXPECT_NE(load_error(dir.path()).find("bad regular expression"), std::string::npos);

  j = toy_tokenizer();
  j["model"]["type"] = "Unigram";
  dir.write("tokenizer.json", j.dump());
  EXPECT_NE(load_error(dir.path()).find("\"Unigram\" is not supported"), std::string::npos);

  j = toy_tokenizer();
  j["model"]["vocab"] = json::array();
  dir.write("tokenizer.json", j.dump());
  EXPECT_NE(load_error(dir.path()).find("model.vocab: expected an object"), std::string::npos);
}

TEST(TokenizerErrors, BadConfig) {
  TempDir dir;
  dir.write("tokenizer.json", toy_tokenizer().dump());
  dir.write("tokenizer_config.json", R"({"bos_token": "<nope>"})");
  const std::string msg = load_error(dir.path());
  EXPECT_NE(msg.find("tokenizer_config.json: bos_token: \"<nope>\" is not in the vocabulary"),
            std::string::npos)
      << msg;
}

// ---- UTF-8 helpers --------------------------------------------------------------------------

TEST(Unicode, LossyConversionMatchesRust) {
  const auto lossy = [](std::string_view s, std::size_t* tail = nullptr) {
    std::string out;
    const std::size_t t = unicode::append_lossy(out, s);
    if (tail != nullptr) *tail = t;
    return out;
  };
  const std::string r(unicode::kReplacementChar);
  std::size_t tail = 0;
  EXPECT_EQ(lossy("a\xE4\xB8", &tail), "a" + r);  // truncated: one U+FFFD, may still complete
  EXPECT_EQ(tail, 2u);
  EXPECT_EQ(lossy("\xC3\x28", &tail), r + "(");
  EXPECT_EQ(tail, 0u);
  EXPECT_EQ(lossy("\xF0\x9F\x98"
                  "A"),
            r + "A");
  EXPECT_EQ(lossy("\xED\xA0\x80"), r + r + r);  // surrogates are not UTF-8
  EXPECT_EQ(lossy("\x80\xFF"), r + r);
  EXPECT_EQ(lossy("é✓🦙"), "é✓🦙");
  EXPECT_EQ(unicode::find_invalid_utf8("ab\xE4\xB8"), 2u);
  EXPECT_EQ(unicode::normalize(unicode::NormalForm::kNFC, "e\xCC\x81"), "\xC3\xA9");
}

}  // namespace
}  // namespace awqd
