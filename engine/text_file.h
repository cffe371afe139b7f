// Whole-file reads for small inputs (tokenizer files, corpora): a `.xz` file is decompressed
// with liblzma on the way in, so fixtures and models can keep their large JSON compressed.
// Errors (missing file, unreadable, corrupt xz data) throw std::runtime_error naming the file.
#pragma once

#include <filesystem>
#include <string>

namespace awqd {

// The file's contents; decompressed when the name ends with ".xz".
std::string read_file(const std::filesystem::path& path);

}  // namespace awqd
