// File-system helpers on POSIX calls. Why not std::filesystem: libtorch.so (2.11 wheel) exports its own
// copies of std::filesystem operations (remove_all, status, create_directories, rename, weakly_canonical,
// ...); a program linked with it binds to those and crashed (remove_all jumped to address 0). Path arithmetic
// (operator/, parent_path, lexically_normal) comes from libstdc++ and is safe; anything that touches the disk
// goes through here.
#pragma once

#include <dirent.h>
#include <ftw.h>
#include <sys/stat.h>
#include <unistd.h>

#include <climits>
#include <cstdlib>
#include <stdexcept>
#include <string>
#include <vector>

namespace sparge::posix {

inline bool is_file(const std::string& p) {
  struct stat st;
  return ::stat(p.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}
inline bool exists(const std::string& p) {
  struct stat st;
  return ::stat(p.c_str(), &st) == 0;
}
// mkdir -p
inline void make_dirs(const std::string& p) {
  for (size_t i = 1; i <= p.size(); ++i)
    if (i == p.size() || p[i] == '/') {
      const std::string part = p.substr(0, i);
      if (::mkdir(part.c_str(), 0755) != 0 && !exists(part))
        throw std::runtime_error("cannot create directory " + part);
    }
}
inline void rename_file(const std::string& from, const std::string& to) {
  if (::rename(from.c_str(), to.c_str()) != 0)
    throw std::runtime_error("cannot rename " + from + " to " + to);
}
// rm -rf (no error when missing)
inline void remove_tree(const std::string& p) {
  if (!exists(p)) return;
  ::nftw(
      p.c_str(), [](const char* f, const struct stat*, int, struct FTW*) { return ::remove(f); }, 16,
      FTW_DEPTH | FTW_PHYS);
}
// realpath, or "" when the file does not exist
inline std::string real_path(const std::string& p) {
  char buf[PATH_MAX];
  return ::realpath(p.c_str(), buf) ? std::string(buf) : std::string();
}
// Names (not paths) of the entries of `dir` ending in `suffix`, unsorted; empty when dir is missing.
inline std::vector<std::string> list_dir(const std::string& dir, const std::string& suffix) {
  std::vector<std::string> out;
  if (DIR* d = ::opendir(dir.c_str())) {
    while (const dirent* e = ::readdir(d)) {
      const std::string n = e->d_name;
      if (n.size() >= suffix.size() && n.compare(n.size() - suffix.size(), suffix.size(), suffix) == 0)
        out.push_back(n);
    }
    ::closedir(d);
  }
  return out;
}

}  // namespace sparge::posix
