// Memory diagnostics from /proc/self: where the RSS is (Linux only; elsewhere they report nothing).
#pragma once

namespace voxtral_rt::detail {

// True when VOXTRAL_RT_MEM_TRACE is set (non-empty, not "0"): load steps then log trace_memory().
bool mem_trace_enabled();

// Logs (Info) VmRSS, its anonymous / file split and the largest mappings of /proc/self/smaps by resident
// size, labelled with `step`. Costs a read of smaps: call it at load steps only, not per token.
void trace_memory(const char* step);

}  // namespace voxtral_rt::detail
