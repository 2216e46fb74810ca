// Integration test of the public API (voxtral_rt.h) on an exported .pte:
//   voxtral_rt_pte_tests MODEL.pte TEKKEN.json AUDIO
// Checks: one live session per Runner; offline transcribe == the same audio fed in odd chunk sizes;
// reset() reproduces the stream (caches restart at position 0); flush idempotent; feed after flush is an
// error; stop() returns early; the per-token callback and take_text() agree with text().
// Prints "N passed, N failed"; exit code 1 on failure, 2 on bad arguments/load failure.
#include <cstdio>
#include <string>
#include <vector>

#include "voxtral_rt/audio.h"
#include "voxtral_rt/voxtral_rt.h"

static int g_passed = 0, g_failed = 0;
#define CHECK(cond)                                                          \
  do {                                                                       \
    if (cond) {                                                              \
      ++g_passed;                                                            \
    } else {                                                                 \
      ++g_failed;                                                            \
      std::printf("FAIL %s:%d: %s\n", __FILE__, __LINE__, #cond);            \
    }                                                                        \
  } while (0)

int main(int argc, char** argv) {
  if (argc != 4) {
    std::fprintf(stderr, "usage: %s MODEL.pte TEKKEN.json AUDIO\n", argv[0]);
    return 2;
  }
  std::string err;
  auto runner = voxtral_rt::Runner::load({argv[1], argv[2]}, &err);
  if (!runner) {
    std::fprintf(stderr, "load failed: %s\n", err.c_str());
    return 2;
  }
  std::vector<float> pcm;
  if (!voxtral_rt::load_audio_file(argv[3], static_cast<int>(runner->info().sample_rate), &pcm, &err)) {
    std::fprintf(stderr, "%s\n", err.c_str());
    return 2;
  }

  // offline reference
  voxtral_rt::Transcript ref;
  CHECK(runner->transcribe(pcm.data(), pcm.size(), {}, &ref, &err));
  CHECK(!ref.token_ids.empty());
  CHECK(ref.token_ids.size() == ref.token_times_ms.size());
  CHECK(ref.text == runner->decode(ref.token_ids));

  // streamed in odd chunks, with callback and pull-style text
  std::string cb_text, pulled;
  std::vector<int64_t> cb_ids;
  voxtral_rt::SessionOptions opts;
  opts.on_token = [&](const voxtral_rt::TokenEvent& ev) {
    cb_ids.push_back(ev.id);
    cb_text += ev.text;
  };
  auto session = runner->create_session(opts, &err);
  CHECK(session != nullptr);
  if (!session) return 1;
  CHECK(runner->create_session({}, &err) == nullptr);  // one live session per Runner
  CHECK(err.find("one stream at a time") != std::string::npos);
  voxtral_rt::Transcript t;
  CHECK(!runner->transcribe(pcm.data(), pcm.size(), {}, &t, &err));
  const size_t chunks[] = {1, 333, 1280, 4001, 17};
  size_t i = 0, c = 0;
  int64_t total = 0;
  while (i < pcm.size()) {
    const size_t n = std::min(chunks[c++ % 5], pcm.size() - i);
    const int64_t got = session->feed(pcm.data() + i, n);
    CHECK(got >= 0);
    total += got;
    pulled += session->take_text();
    i += n;
  }
  const int64_t got = session->flush();
  CHECK(got >= 0);
  total += got;
  pulled += session->take_text();
  CHECK(session->flush() == 0);  // idempotent
  CHECK(session->finished());
  CHECK(session->token_ids() == ref.token_ids);
  CHECK(session->token_times_ms() == ref.token_times_ms);
  CHECK(total == static_cast<int64_t>(ref.token_ids.size()));
  CHECK(cb_ids == ref.token_ids);
  CHECK(cb_text == ref.text);
  CHECK(pulled == ref.text);
  CHECK(session->feed(pcm.data(), 10) == -1);
  CHECK(session->error().find("reset") != std::string::npos);

  // reset: the same stream again gives the same tokens (stale caches are masked from position 0)
  session->reset();
  CHECK(session->token_ids().empty());
  CHECK(session->feed(pcm.data(), pcm.size()) >= 0);
  CHECK(session->flush() >= 0);
  CHECK(session->token_ids() == ref.token_ids);

  // stop(): later calls return at once with no new tokens
  session->reset();
  session->stop();
  CHECK(session->feed(pcm.data(), pcm.size()) == 0);
  CHECK(session->token_ids().empty());

  // a different delay changes the prompt length and the time origin
  session.reset();  // release the runner for a new session
  voxtral_rt::SessionOptions d;
  d.delay_ms = static_cast<int>(runner->info().ms_per_token);
  auto s2 = runner->create_session(d, &err);
  CHECK(s2 != nullptr);
  if (s2) {
    CHECK(s2->delay_tokens() == 1);
    CHECK(s2->feed(pcm.data(), pcm.size()) >= 0);
    CHECK(s2->flush() >= 0);
    CHECK(!s2->token_times_ms().empty() && s2->token_times_ms()[0] == static_cast<double>(runner->info().ms_per_token));
  }
  d.delay_ms = 100;
  CHECK(runner->create_session(d, &err) == nullptr);

  std::printf("%d passed, %d failed\n", g_passed, g_failed);
  return g_failed ? 1 : 0;
}
