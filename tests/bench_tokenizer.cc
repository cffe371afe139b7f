// Tokenizer throughput (not a test; not run by ctest). For each fixture tokenizer:
//   load      time to read tokenizer.json(.xz) and build the model
//   corpus    encode WikiText-2 test (fixtures/text/wiki.test.raw.xz) line by line: first pass
//             (cold word cache) and second pass (warm), tokens/s; then decode tokens/s and
//             IncrementalDecoder tokens/s over the same ids
//   prompt    one ~4000-token prompt from pydoc-heldout.txt: the first encode after load
//             (cold cache) and the median of 50 warm encodes
// Single thread. Times are the thread's CPU time (CLOCK_THREAD_CPUTIME_ID), so that other work
// on a shared machine does not count; the cold prompt is the median over 3 fresh loads.
// Usage: bench_tokenizer [FIXTURES_DIR]
#include <algorithm>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <string>
#include <vector>

#include "engine/text_file.h"
#include "engine/tokenizer.h"
#include "tests/test_support.h"

namespace {

// Thread CPU time in seconds.
struct Clock {
  using time_point = double;
  static double now() {
    timespec ts{};
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return static_cast<double>(ts.tv_sec) + 1e-9 * static_cast<double>(ts.tv_nsec);
  }
};

double seconds_since(double t0) { return Clock::now() - t0; }

std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> lines;
  std::size_t b = 0;
  while (b < text.size()) {
    std::size_t e = text.find('\n', b);
    e = e == std::string::npos ? text.size() : e + 1;
    lines.push_back(text.substr(b, e - b));
    b = e;
  }
  return lines;
}

// The shortest prefix of `text` (cut at a line end) that has at least `tokens` tokens.
std::string prompt_of(const awqd::Tokenizer& tok, const std::string& text, std::size_t tokens) {
  std::size_t end = 0;
  while (end < text.size()) {
    end = text.find('\n', end + 1);
    if (end == std::string::npos) end = text.size();
    if (tok.encode(text.substr(0, end), false).size() >= tokens) break;
  }
  return text.substr(0, end);
}

}  // namespace

int main(int argc, char** argv) {
  const std::filesystem::path fixtures = argc > 1 ? argv[1] : awqd::test::fixtures_dir();
  const std::string wiki = awqd::read_file(fixtures / "text/wiki.test.raw.xz");
  const std::string pydoc = awqd::read_file(fixtures / "text/pydoc-heldout.txt");
  const std::vector<std::string> lines = lines_of(wiki);
  std::printf("corpus: WikiText-2 test, %zu bytes, %zu lines\n\n", wiki.size(), lines.size());
  std::printf("%-10s %8s | %12s %12s %12s %12s | %10s %10s %10s\n", "tokenizer", "load s",
              "enc cold t/s", "enc warm t/s", "dec t/s", "stream t/s", "prompt tok", "cold ms",
              "warm ms");

  for (const char* name : {"llama-13m", "tokenizers/qwen3", "tokenizers/llama3"}) {
    auto t0 = Clock::now();
    const awqd::Tokenizer tok = awqd::Tokenizer::load(fixtures / name);
    const double load_s = seconds_since(t0);

    // The 4000-token prompt on fresh tokenizers: an empty word cache.
    const std::string prompt = prompt_of(tok, pydoc, 4000);
    std::vector<double> cold_ms;
    std::size_t prompt_tokens = 0;
    for (int i = 0; i < 3; ++i) {
      const awqd::Tokenizer fresh = awqd::Tokenizer::load(fixtures / name);
      t0 = Clock::now();
      prompt_tokens = fresh.encode(prompt, true).size();
      cold_ms.push_back(seconds_since(t0) * 1e3);
    }
    std::sort(cold_ms.begin(), cold_ms.end());
    const double first_ms = cold_ms[1];

    std::vector<std::vector<std::int32_t>> ids(lines.size());
    double enc_s[2];
    std::size_t total = 0;
    for (double& pass : enc_s) {
      total = 0;
      t0 = Clock::now();
      for (std::size_t i = 0; i < lines.size(); ++i) {
        ids[i] = tok.encode(lines[i], false);
        total += ids[i].size();
      }
      pass = seconds_since(t0);
    }

    t0 = Clock::now();
    std::size_t chars = 0;
    for (const auto& line_ids : ids) chars += tok.decode(line_ids).size();
    const double dec_s = seconds_since(t0);

    t0 = Clock::now();
    for (const auto& line_ids : ids) {
      awqd::IncrementalDecoder dec(tok);
      for (const std::int32_t id : line_ids) chars += dec.push(id).size();
      chars += dec.flush().size();
    }
    const double stream_s = seconds_since(t0);

    std::vector<double> ms;
    for (int i = 0; i < 50; ++i) {
      t0 = Clock::now();
      chars += tok.encode(prompt, true).size();
      ms.push_back(seconds_since(t0) * 1e3);
    }
    std::sort(ms.begin(), ms.end());

    std::printf("%-10s %8.2f | %12.0f %12.0f %12.0f %12.0f | %10zu %10.2f %10.2f\n",
                std::filesystem::path(name).filename().c_str(), load_s, total / enc_s[0],
                total / enc_s[1], total / dec_s, total / stream_s, prompt_tokens, first_ms,
                ms[ms.size() / 2]);
    if (chars == 0) std::printf("(nothing decoded)\n");
  }
  return 0;
}
