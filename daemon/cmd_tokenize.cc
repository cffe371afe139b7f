// `awqd tokenize` and `awqd detokenize` (SPEC section 6): the model's tokenizer from the command
// line, for checking prompts and debugging outputs. No Redis, no GPU: they load only
// tokenizer.json (or .xz) and tokenizer_config.json from the model directory.
//
//   awqd tokenize --model DIR (--text S | --file F) [--no-special] [--no-parse-special]
//       prints the ids as one JSON array
//   awqd detokenize --model DIR (--ids '[1,2,3]' | --file F) [--skip-special] [--json]
//       prints the text (with --json: a JSON string, exact to the byte)
// A FILE of "-" is standard input; a FILE ending in .xz is decompressed.
#include <cstdio>
#include <iostream>
#include <iterator>
#include <memory>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string>
#include <vector>

#include "daemon/cli.h"
#include "engine/text_file.h"
#include "engine/tokenizer.h"

namespace awqd::cli {
namespace {

std::string read_input(const std::string& file) {
  if (file == "-") {
    return std::string(std::istreambuf_iterator<char>(std::cin), std::istreambuf_iterator<char>());
  }
  return read_file(file);
}

struct TokenizeOptions {
  std::string model, text, file;
  bool no_special = false, no_parse_special = false;
};

struct DetokenizeOptions {
  std::string model, ids, file;
  bool skip_special = false, json = false;
};

std::vector<std::int32_t> parse_ids(const std::string& text, const std::string& source,
                                    int vocab_size) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(text);
  } catch (const nlohmann::json::parse_error& e) {
    throw std::runtime_error(source + ": not JSON: " + e.what());
  }
  if (!j.is_array()) throw std::runtime_error(source + ": expected a JSON array of token ids");
  std::vector<std::int32_t> ids;
  ids.reserve(j.size());
  for (const auto& v : j) {
    if (!v.is_number_integer() || v.get<std::int64_t>() < 0 ||
        v.get<std::int64_t>() >= vocab_size) {
      throw std::runtime_error(source + ": " + v.dump() + " is not a token id of this model (0.." +
                               std::to_string(vocab_size - 1) + ")");
    }
    ids.push_back(v.get<std::int32_t>());
  }
  return ids;
}

}  // namespace

void add_tokenize_commands(CLI::App& app) {
  auto topt = std::make_shared<TokenizeOptions>();
  CLI::App* tok = app.add_subcommand("tokenize", "Print the token ids of a text (JSON array)");
  tok->add_option("--model", topt->model, "Model directory (tokenizer.json or tokenizer.json.xz)")
      ->required()
      ->type_name("DIR");
  CLI::Option_group* tin = tok->add_option_group("input", "Exactly one of:");
  tin->add_option("--text", topt->text, "The text to tokenize")->type_name("TEXT");
  tin->add_option("--file", topt->file, "Read the text from FILE ('-' for standard input)")
      ->type_name("FILE");
  tin->require_option(1);
  tok->add_flag("--no-special", topt->no_special,
                "Do not add the model's BOS/EOS tokens (add_special_tokens=false)");
  tok->add_flag("--no-parse-special", topt->no_parse_special,
                "Treat special-token text such as <|im_start|> as plain text");
  set_action(tok, [topt] {
    const Tokenizer tokenizer = Tokenizer::load(topt->model);
    const std::string text = topt->file.empty() ? topt->text : read_input(topt->file);
    const auto ids = tokenizer.encode(text, !topt->no_special, !topt->no_parse_special);
    std::cout << nlohmann::json(ids).dump() << "\n";
    return 0;
  });

  auto dopt = std::make_shared<DetokenizeOptions>();
  CLI::App* detok = app.add_subcommand("detokenize", "Print the text of token ids");
  detok->add_option("--model", dopt->model, "Model directory (tokenizer.json or tokenizer.json.xz)")
      ->required()
      ->type_name("DIR");
  CLI::Option_group* din = detok->add_option_group("input", "Exactly one of:");
  din->add_option("--ids", dopt->ids, "Token ids as a JSON array, e.g. '[1,2,3]'")
      ->type_name("JSON");
  din->add_option("--file", dopt->file, "Read the JSON array from FILE ('-' for standard input)")
      ->type_name("FILE");
  din->require_option(1);
  detok->add_flag("--skip-special", dopt->skip_special,
                  "Leave out special tokens (BOS, <|im_end|>, ...)");
  detok->add_flag("--json", dopt->json, "Print the text as a JSON string");
  set_action(detok, [dopt] {
    const Tokenizer tokenizer = Tokenizer::load(dopt->model);
    const bool from_file = !dopt->file.empty();
    const auto ids = parse_ids(from_file ? read_input(dopt->file) : dopt->ids,
                               from_file ? dopt->file : "--ids", tokenizer.vocab_size());
    const std::string text = tokenizer.decode(ids, dopt->skip_special);
    if (dopt->json) {
      std::cout << nlohmann::json(text).dump() << "\n";
    } else {
      std::cout << text << "\n";
    }
    return 0;
  });
}

}  // namespace awqd::cli
