#include "memtrace.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "log.h"

namespace voxtral_rt::detail {

bool mem_trace_enabled() {
  const char* v = std::getenv("VOXTRAL_RT_MEM_TRACE");
  return v && *v && std::strcmp(v, "0") != 0;
}

void trace_memory(const char* step) {
  std::ifstream f("/proc/self/smaps");
  if (!f) return;
  struct Vma {
    long long size_kb = 0, rss_kb = 0, anon_kb = 0;
    std::string range, name;
  };
  std::vector<Vma> vmas;
  long long rss = 0, anon = 0;
  std::string line;
  while (std::getline(f, line)) {
    // A mapping header is "start-end perms offset dev inode [path]"; field lines are "Key:   N kB".
    const size_t colon = line.find(':');
    const size_t dash = line.find('-');
    if (dash != std::string::npos && (colon == std::string::npos || dash < colon)) {
      std::istringstream h(line);
      Vma v;
      std::string perms, off, dev, inode;
      h >> v.range >> perms >> off >> dev >> inode;
      std::getline(h >> std::ws, v.name);
      if (v.name.empty()) v.name = "[anon]";
      v.name = perms + " " + v.name;
      vmas.push_back(std::move(v));
      continue;
    }
    if (vmas.empty() || colon == std::string::npos) continue;
    const std::string key = line.substr(0, colon);
    const long long kb = std::atoll(line.c_str() + colon + 1);
    if (key == "Size") vmas.back().size_kb = kb;
    if (key == "Rss") {
      vmas.back().rss_kb = kb;
      rss += kb;
    }
    if (key == "Anonymous") {
      vmas.back().anon_kb = kb;
      anon += kb;
    }
  }
  std::sort(vmas.begin(), vmas.end(), [](const Vma& a, const Vma& b) { return a.rss_kb > b.rss_kb; });
  std::ostringstream o;
  o << "mem [" << step << "]: RSS " << rss / 1024 << " MiB (anonymous " << anon / 1024 << ", file "
    << (rss - anon) / 1024 << ") in " << vmas.size() << " mappings; largest:";
  for (size_t i = 0; i < vmas.size() && i < 6 && vmas[i].rss_kb >= 1024; ++i)
    o << "\n    rss " << vmas[i].rss_kb / 1024 << " MiB of " << vmas[i].size_kb / 1024 << " MiB, anon "
      << vmas[i].anon_kb / 1024 << " MiB: " << vmas[i].range << " " << vmas[i].name;
  VX_LOG_INFO("%s", o.str().c_str());
}

}  // namespace voxtral_rt::detail
