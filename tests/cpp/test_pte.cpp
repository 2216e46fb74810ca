// Integration test of the public API (voxtral_rt.h) on an exported .pte:
//   voxtral_rt_pte_tests MODEL.pte TEKKEN.json AUDIO
// Checks: offline transcribe == the same audio fed in odd chunk sizes;
// reset() reproduces the stream (caches restart at position 0); flush idempotent; feed after flush is an
// error; stop() returns early; the per-token callback and take_text() agree with text(); concurrent
// sessions on several threads give the tokens of sequential runs (they share packed weights through
// XNNPACK's weights cache); max_sessions; a Session outliving its Runner; the same without the mapping;
// packed weights kept in a file (packed_cache_path) and mapped by a later Runner; LiveSession (push from
// another thread == offline tokens, backlog, min_feed_ms, stop, errors).
//   voxtral_rt_pte_tests MODEL.pte TEKKEN.json AUDIO live   runs only the offline reference and LiveSession
// Prints "N passed, N failed"; exit code 1 on failure, 2 on bad arguments/load failure.
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "voxtral_rt/audio.h"
#include "voxtral_rt/voxtral_rt.h"
#include "check.h"


// A second, different audio: the first one reversed and at 70 % gain (different tokens, same length).
static std::vector<float> other_audio(const std::vector<float>& pcm) {
  std::vector<float> x(pcm.rbegin(), pcm.rend());
  for (auto& v : x) v *= 0.7f;
  return x;
}

// Streams `pcm` through a session in `chunk`-sample feeds (0 = all at once); returns its tokens.
static std::vector<int64_t> stream_tokens(voxtral_rt::Runner& runner, const std::vector<float>& pcm, size_t chunk,
                                          int delay_ms, std::string* text) {
  std::string err;
  voxtral_rt::SessionOptions o;
  o.delay_ms = delay_ms;
  auto s = runner.create_session(o, &err);
  if (!s) {
    std::printf("create_session: %s\n", err.c_str());
    return {};
  }
  const size_t step = chunk ? chunk : pcm.size();
  for (size_t i = 0; i < pcm.size(); i += step)
    if (s->feed(pcm.data() + i, std::min(step, pcm.size() - i)) < 0) return {};
  if (s->flush() < 0) return {};
  if (text) *text = s->text();
  return s->token_ids();
}

// Two (and three) sessions of one Runner on different threads at the same time give exactly the tokens of
// sequential runs.
static void test_concurrent(voxtral_rt::Runner& runner, const std::vector<float>& a) {
  const std::vector<float> b = other_audio(a);
  std::string ta, tb;
  const auto ref_a = stream_tokens(runner, a, 0, -1, &ta);
  const auto ref_b = stream_tokens(runner, b, 0, -1, &tb);
  const int d = static_cast<int>(runner.info().ms_per_token);
  const auto ref_c = stream_tokens(runner, a, 0, 3 * d, nullptr);
  CHECK(!ref_a.empty() && !ref_b.empty() && !ref_c.empty());
  CHECK(ref_a != ref_b);  // really different streams
  for (int round = 0; round < 3; ++round) {
    std::vector<int64_t> got_a, got_b, got_c;
    std::string txt_a, txt_b;
    // different chunkings per round: the sessions interleave their model calls differently each time
    const size_t ca = round == 0 ? 0 : 1280 * static_cast<size_t>(round) + 7, cb = round == 1 ? 0 : 333;
    std::thread th_a([&] { got_a = stream_tokens(runner, a, ca, -1, &txt_a); });
    std::thread th_b([&] { got_b = stream_tokens(runner, b, cb, -1, &txt_b); });
    std::thread th_c;
    if (round == 2) th_c = std::thread([&] { got_c = stream_tokens(runner, a, 640, 3 * d, nullptr); });
    th_a.join();
    th_b.join();
    if (th_c.joinable()) th_c.join();
    CHECK(got_a == ref_a);
    CHECK(got_b == ref_b);
    CHECK(txt_a == ta && txt_b == tb);
    if (round == 2) CHECK(got_c == ref_c);
  }
  // Runner::transcribe from two threads at once
  voxtral_rt::Transcript xa, xb;
  std::string ea, eb;
  bool oka = false, okb = false;
  std::thread t1([&] { oka = runner.transcribe(a.data(), a.size(), {}, &xa, &ea); });
  std::thread t2([&] { okb = runner.transcribe(b.data(), b.size(), {}, &xb, &eb); });
  t1.join();
  t2.join();
  CHECK(oka && okb);
  CHECK(xa.token_ids == ref_a && xb.token_ids == ref_b);
}

// max_sessions; a Session outliving its Runner.
static void test_limits_and_lifetime(const char* model, const char* tok, const std::vector<float>& pcm) {
  std::string err;
  voxtral_rt::RunnerOptions ro{model, tok};
  ro.max_sessions = 1;
  auto runner = voxtral_rt::Runner::load(ro, &err);
  CHECK(runner != nullptr);
  if (!runner) return;
  auto s1 = runner->create_session({}, &err);
  CHECK(s1 != nullptr);
  CHECK(runner->create_session({}, &err) == nullptr);
  CHECK(err.find("max_sessions") != std::string::npos);
  s1.reset();
  auto s2 = runner->create_session({}, &err);  // the slot is free again
  CHECK(s2 != nullptr);
  voxtral_rt::Transcript ref;
  CHECK(runner->transcribe(pcm.data(), pcm.size(), {}, &ref, &err) == false);  // s2 holds the one slot
  s2.reset();
  CHECK(runner->transcribe(pcm.data(), pcm.size(), {}, &ref, &err));
  auto s3 = runner->create_session({}, &err);
  runner.reset();  // the session keeps the model alive
  CHECK(s3 != nullptr);
  if (s3) {
    CHECK(s3->feed(pcm.data(), pcm.size()) >= 0);
    CHECK(s3->flush() >= 0);
    CHECK(s3->token_ids() == ref.token_ids);
  }
  ro.max_sessions = -1;
  CHECK(voxtral_rt::Runner::load(ro, &err) == nullptr);
}

// LiveSession: audio pushed from a producer thread in tiny pieces (an audio callback) gives exactly the offline
// tokens, whatever the worker's feeds were; text pulled from a third thread meanwhile; a whole clip pushed at
// once is one feed with offline's encoder calls; min_feed_ms; stop(), destruction mid-run, errors, the bound.
static void test_live(voxtral_rt::Runner& runner, const std::vector<float>& pcm, const voxtral_rt::Transcript& ref) {
  using voxtral_rt::LiveSession;
  std::string err;
  const auto per_ms = static_cast<size_t>(runner.info().sample_rate / 1000);
  for (const int min_feed_ms : {0, 300}) {
    std::vector<int64_t> cb_ids;  // on_token runs on the worker; read after finish()
    voxtral_rt::SessionOptions so;
    so.on_token = [&](const voxtral_rt::TokenEvent& ev) { cb_ids.push_back(ev.id); };
    voxtral_rt::LiveOptions lo;
    lo.min_feed_ms = min_feed_ms;
    auto live = LiveSession::start(runner, so, lo, &err);
    CHECK(live != nullptr);
    if (!live) return;
    std::atomic<bool> done{false};
    std::string pulled;
    std::thread consumer([&] {
      while (!done.load()) {
        pulled += live->take_text();
        (void)live->stats();
        std::this_thread::yield();
      }
    });
    bool all_pushed = true;
    std::thread producer([&] {
      const size_t pieces[] = {1, 160, 333, 17, 1280, 7};
      for (size_t i = 0, c = 0; i < pcm.size();) {
        const size_t n = std::min(pieces[c++ % 6], pcm.size() - i);
        all_pushed &= live->push(pcm.data() + i, n);
        i += n;
      }
    });
    producer.join();
    CHECK(all_pushed);
    CHECK(live->finish());
    done = true;
    consumer.join();
    pulled += live->take_text();
    CHECK(live->session().token_ids() == ref.token_ids);
    CHECK(live->session().token_times_ms() == ref.token_times_ms);
    CHECK(cb_ids == ref.token_ids);
    CHECK(pulled == ref.text);
    const voxtral_rt::LiveStats st = live->stats();
    CHECK(st.pushed_samples == static_cast<int64_t>(pcm.size()) && st.fed_samples == st.pushed_samples);
    CHECK(st.dropped_samples == 0 && st.queued_samples == 0);
    CHECK(st.n_feeds == static_cast<int64_t>(live->session().stats().feed_ms.size()));
    // every feed but the last waits for min_feed_ms of audio
    if (min_feed_ms > 0) CHECK(st.n_feeds <= static_cast<int64_t>(pcm.size() / (per_ms * min_feed_ms)) + 1);
    CHECK(!live->push(pcm.data(), 10));  // after finish()
    CHECK(live->finish());               // idempotent
  }

  {  // a backlog: the whole clip pushed at once is one feed -- offline's encoder calls; text only via on_text
    std::string got_text;
    voxtral_rt::LiveOptions lo;
    lo.on_text = [&](const std::string& t) { got_text += t; };
    auto live = LiveSession::start(runner, {}, lo, &err);
    CHECK(live != nullptr);
    if (!live) return;
    CHECK(live->push(pcm.data(), pcm.size()));
    CHECK(live->finish());
    CHECK(live->session().token_ids() == ref.token_ids);
    CHECK(live->stats().n_feeds == 1 && live->stats().max_backlog_samples == static_cast<int64_t>(pcm.size()));
    CHECK(live->session().stats().n_encoder_calls == ref.stats.n_encoder_calls);
    CHECK(got_text == ref.text && live->take_text().empty());
  }

  {  // stop() mid-run: returns promptly, later pushes refused, the tokens so far are a prefix of the reference
    auto live = LiveSession::start(runner, {}, {}, &err);
    CHECK(live != nullptr);
    if (!live) return;
    CHECK(live->push(pcm.data(), pcm.size()));
    live->stop();
    CHECK(live->finish());
    CHECK(!live->push(pcm.data(), 10));
    const auto& ids = live->session().token_ids();
    CHECK(ids.size() <= ref.token_ids.size() && std::equal(ids.begin(), ids.end(), ref.token_ids.begin()));
  }
  for (int i = 0; i < 3; ++i) {  // destroyed while the worker runs (no finish): no hang, nothing leaks
    auto live = LiveSession::start(runner, {}, {}, &err);
    CHECK(live != nullptr);
    if (live) CHECK(live->push(pcm.data(), pcm.size()));
    if (i > 0) std::this_thread::sleep_for(std::chrono::milliseconds(2 * i));
  }

  {  // a bad sample: the worker reports it, push() refuses, finish() fails
    auto live = LiveSession::start(runner, {}, {}, &err);
    CHECK(live != nullptr);
    if (!live) return;
    std::vector<float> bad(pcm.begin(), pcm.begin() + static_cast<std::ptrdiff_t>(pcm.size() / 2));
    bad[100] = std::nanf("");
    CHECK(live->push(bad.data(), bad.size()));
    CHECK(!live->finish());
    CHECK(live->failed() && live->error().find("NaN") != std::string::npos);
    CHECK(!live->push(pcm.data(), 10));
  }

  {  // the queue bound: past max_queue_ms a push is refused (never blocks) and counted
    voxtral_rt::LiveOptions lo;
    lo.min_feed_ms = 60000;  // the worker waits: the queue only grows
    lo.max_queue_ms = 1000;
    auto live = LiveSession::start(runner, {}, lo, &err);
    CHECK(live != nullptr);
    if (!live) return;
    CHECK(live->push(pcm.data(), 500 * per_ms));
    CHECK(!live->push(pcm.data(), 600 * per_ms));
    CHECK(live->push(pcm.data(), 500 * per_ms));
    const voxtral_rt::LiveStats st = live->stats();
    CHECK(st.queued_samples == static_cast<int64_t>(1000 * per_ms));
    CHECK(st.dropped_samples == static_cast<int64_t>(600 * per_ms));
    CHECK(st.n_feeds == 0);
  }

  {  // callbacks: finish() from the worker refuses (no deadlock); a throwing callback is an error, not a crash
    std::atomic<LiveSession*> self{nullptr};
    std::atomic<int> finish_from_worker{-1};
    voxtral_rt::SessionOptions so;
    so.on_token = [&](const voxtral_rt::TokenEvent&) {
      if (finish_from_worker.load() < 0) finish_from_worker = self.load()->finish() ? 1 : 0;
    };
    voxtral_rt::LiveOptions lo;
    lo.on_text = [](const std::string&) { throw std::runtime_error("boom"); };
    auto live = LiveSession::start(runner, so, lo, &err);
    CHECK(live != nullptr);
    if (!live) return;
    self = live.get();
    CHECK(live->push(pcm.data(), pcm.size()));
    CHECK(!live->finish());
    CHECK(finish_from_worker.load() == 0);
    CHECK(live->error().find("boom") != std::string::npos);
  }

  voxtral_rt::LiveOptions neg;
  neg.min_feed_ms = -1;
  CHECK(LiveSession::start(runner, {}, neg, &err) == nullptr && err.find("min_feed_ms") != std::string::npos);
  voxtral_rt::SessionOptions bad_delay;
  bad_delay.delay_ms = 100;
  CHECK(LiveSession::start(runner, bad_delay, {}, &err) == nullptr && err.find("100") != std::string::npos);
}

// Two sessions of one Runner on two threads (offline and in 80 ms chunks) both give `ref`.
static void check_two_concurrent_sessions(voxtral_rt::Runner& runner, const std::vector<float>& pcm,
                                          const std::vector<int64_t>& ref) {
  std::vector<int64_t> a, b;
  std::thread t1([&] { a = stream_tokens(runner, pcm, 0, -1, nullptr); });
  std::thread t2([&] { b = stream_tokens(runner, pcm, 1280, -1, nullptr); });
  t1.join();
  t2.join();
  CHECK(a == ref && b == ref);
}

// use_mmap = false: the program is read through file reads and XNNPACK's weights cache stays off (each
// backend packs its own weights); same tokens, alone and with two concurrent sessions.
static void test_file_reads(const char* model, const char* tok, const std::vector<float>& pcm,
                            const std::vector<int64_t>& ref) {
  std::string err;
  voxtral_rt::RunnerOptions ro{model, tok};
  ro.use_mmap = false;
  auto runner = voxtral_rt::Runner::load(ro, &err);
  CHECK(runner != nullptr);
  if (!runner) return;
  check_two_concurrent_sessions(*runner, pcm, ref);
}

// packed_cache_path: the first Runner packs into the file, a later one maps it (no packing); same tokens,
// also with two concurrent sessions on the mapped weights.
static void test_packed_cache_file(const char* model, const char* tok, const std::vector<float>& pcm,
                                   const std::vector<int64_t>& ref) {
  char dir[] = "/tmp/voxtral_rt_pte_tests_XXXXXX";
  if (!::mkdtemp(dir)) {
    CHECK(false);
    return;
  }
  const std::string path = std::string(dir) + "/packed.bin";
  std::string err;
  voxtral_rt::RunnerOptions ro{model, tok};
  ro.packed_cache_path = path;
  for (int run = 0; run < 2; ++run) {  // 0: writes the file, 1: loads it
    auto runner = voxtral_rt::Runner::load(ro, &err);
    CHECK(runner != nullptr);
    if (!runner) break;
    check_two_concurrent_sessions(*runner, pcm, ref);
    struct stat st;
    CHECK(::stat(path.c_str(), &st) == 0 && st.st_size > 0);
  }
  ro.use_mmap = false;  // the cache needs the mapping: a clear error, not a silent fallback
  CHECK(voxtral_rt::Runner::load(ro, &err) == nullptr);
  CHECK(err.find("packed_cache_path") != std::string::npos);
  std::remove(path.c_str());
  ::rmdir(dir);
}

int main(int argc, char** argv) {
  const bool live_only = argc == 5 && std::string(argv[4]) == "live";
  if (argc != 4 && !live_only) {
    std::fprintf(stderr, "usage: %s MODEL.pte TEKKEN.json AUDIO [live]\n", argv[0]);
    return 2;
  }
  std::string err;
  voxtral_rt::RunnerOptions ro{argv[1], argv[2]};
  // VOXTRAL_RT_THREADS=1: no threadpool workers (a ThreadSanitizer run cannot see the uninstrumented pool's
  // synchronisation and would report every handoff as a race).
  if (const char* t = std::getenv("VOXTRAL_RT_THREADS")) ro.threads = std::atoi(t);
  auto runner = voxtral_rt::Runner::load(ro, &err);
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
  voxtral_rt::Transcript ref, t_unused;
  CHECK(runner->transcribe(pcm.data(), pcm.size(), {}, &ref, &err));
  CHECK(!ref.token_ids.empty());
  CHECK(!runner->transcribe(pcm.data(), pcm.size(), {}, nullptr, &err));
  CHECK(!runner->transcribe(nullptr, 10, {}, &t_unused, &err));
  CHECK(ref.token_ids.size() == ref.token_times_ms.size());
  CHECK(ref.text == runner->decode(ref.token_ids));
  test_live(*runner, pcm, ref);
  if (live_only) {
    std::printf("%d passed, %d failed\n", g_passed, g_failed);
    return g_failed ? 1 : 0;
  }

  // streamed in odd chunks, with callback and pull-style text
  std::string cb_text, pulled;
  std::vector<int64_t> cb_ids;
  voxtral_rt::SessionOptions opts;
  opts.on_token = [&](const voxtral_rt::TokenEvent& ev) {
    cb_ids.push_back(ev.id);
    cb_text += ev.text;
  };
  std::vector<voxtral_rt::Segment> cb_segments;
  opts.on_segment = [&](const voxtral_rt::Segment& sg) { cb_segments.push_back(sg); };
  auto session = runner->create_session(opts, &err);
  CHECK(session != nullptr);
  if (!session) return 1;
  // a second live session (own caches) while the first is mid-stream does not disturb it
  voxtral_rt::Transcript t;
  CHECK(runner->transcribe(pcm.data(), pcm.size(), {}, &t, &err));
  CHECK(t.token_ids == ref.token_ids);
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
  // words and segments: every segment came through on_segment by the end of flush(), the same as the offline
  // Transcript's; the words are the segments' words, in time order
  auto same = [](const std::vector<voxtral_rt::Segment>& a, const std::vector<voxtral_rt::Segment>& b) {
    if (a.size() != b.size()) return false;
    for (size_t k = 0; k < a.size(); ++k) {
      if (a[k].text != b[k].text || a[k].start_ms != b[k].start_ms || a[k].end_ms != b[k].end_ms ||
          a[k].words.size() != b[k].words.size())
        return false;
    }
    return true;
  };
  const std::vector<voxtral_rt::Segment> segs = session->segments();
  CHECK(same(cb_segments, segs) && same(segs, ref.segments));
  std::vector<voxtral_rt::Word> seg_words;
  for (const auto& sg : segs) seg_words.insert(seg_words.end(), sg.words.begin(), sg.words.end());
  const std::vector<voxtral_rt::Word> words = session->words();
  CHECK(words.size() == seg_words.size());
  for (size_t k = 0; k < words.size() && k < seg_words.size(); ++k) {
    CHECK(words[k].text == seg_words[k].text && words[k].end_ms == seg_words[k].end_ms);
    CHECK(!words[k].text.empty() && words[k].start_ms < words[k].end_ms);
    if (k) CHECK(words[k - 1].end_ms <= words[k].start_ms);
  }
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
  session.reset();
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
  voxtral_rt::SessionOptions bad_pause;
  bad_pause.segment_pause_ms = -1;
  CHECK(runner->create_session(bad_pause, &err) == nullptr && err.find("segment_pause_ms") != std::string::npos);

  s2.reset();
  test_concurrent(*runner, pcm);
  test_limits_and_lifetime(argv[1], argv[2], pcm);
  test_file_reads(argv[1], argv[2], pcm, ref.token_ids);
  test_packed_cache_file(argv[1], argv[2], pcm, ref.token_ids);

  std::printf("%d passed, %d failed\n", g_passed, g_failed);
  return g_failed ? 1 : 0;
}
