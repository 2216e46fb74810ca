// LiveSession (voxtral_rt.h "live input"): a Session fed by a worker thread from a queue that push() fills.
#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <exception>
#include <mutex>
#include <system_error>
#include <thread>
#include <vector>

#include "voxtral_rt/voxtral_rt.h"

namespace voxtral_rt {

namespace {

// Most audio per Session::feed() call when the worker takes a long backlog. One feed() encodes every ready
// token before it decodes, so one huge feed would hold the audio embeddings of the whole backlog at once
// (dim floats per 80 ms: ~550 MB per hour at dim 3072) and release no text until its end. 10 s pieces still
// give full encoder calls (max_enc_tokens: 16 by default, 125 tokens = 10 s) and cost at most one extra, partial
// encoder call per 10 s.
constexpr int64_t kMaxFeedMs = 10000;

// The LiveSession whose worker runs on this thread: finish() from a callback must not join its own thread.
thread_local const void* t_worker_of = nullptr;

}  // namespace

struct LiveSession::Impl {
  std::unique_ptr<Session> session;
  std::function<void(const std::string&)> on_text;
  size_t min_feed = 1;   // samples queued before the worker feeds (>= 1)
  size_t max_queue = 0;  // samples; 0 = unbounded
  size_t max_feed = 1;   // samples per feed() call

  mutable std::mutex mu;       // guards everything below except the atomics
  std::condition_variable cv;  // the worker waits here for audio, finish() or the destructor
  std::vector<float> queue;    // pushed, not yet taken by the worker
  std::string text;            // released, not yet taken (when on_text is unset)
  std::string error;
  LiveStats stats;
  bool finishing = false;            // finish() or the destructor: feed what is queued (unless stopped), exit
  std::atomic<bool> stopped{false};  // written without the lock (stop() may run in a signal handler)
  std::atomic<bool> failed{false};

  std::mutex join_mu;  // finish() and the destructor join once
  std::thread worker;

  void run();
  void feed(const float* pcm, size_t n);
  void release_text();
};

// Called from the worker without the lock (the model runs unlocked); takes it only to publish results.
void LiveSession::Impl::release_text() {
  std::string t = session->take_text();
  if (t.empty()) return;
  if (on_text) {
    on_text(t);
    return;
  }
  std::lock_guard<std::mutex> lk(mu);
  text += t;
}

void LiveSession::Impl::feed(const float* pcm, size_t n) {
  const int64_t r = session->feed(pcm, n);
  release_text();
  std::lock_guard<std::mutex> lk(mu);
  stats.fed_samples += static_cast<int64_t>(n);
  stats.n_feeds++;
  if (r < 0) {
    error = session->error();
    failed.store(true);
  }
}

void LiveSession::Impl::run() {
  t_worker_of = this;
  std::vector<float> batch;
  std::unique_lock<std::mutex> lk(mu);
  try {
    for (;;) {
      cv.wait(lk, [&] { return stopped.load() || finishing || queue.size() >= min_feed; });
      if (stopped.load()) break;
      if (!queue.empty()) {
        // Take the whole backlog; the queue gets the previous batch's buffer back (no allocation in push()).
        batch.clear();
        batch.swap(queue);
        stats.max_backlog_samples = std::max(stats.max_backlog_samples, static_cast<int64_t>(batch.size()));
        stats.queued_samples = 0;
        lk.unlock();
        for (size_t i = 0; i < batch.size() && !stopped.load() && !failed.load(); i += max_feed)
          feed(batch.data() + i, std::min(max_feed, batch.size() - i));
        lk.lock();
        if (failed.load()) break;
        continue;
      }
      // finishing, and everything queued has been fed
      lk.unlock();
      const int64_t r = session->flush();
      release_text();
      lk.lock();
      if (r < 0) {
        error = session->error();
        failed.store(true);
      }
      break;
    }
  } catch (const std::exception& e) {  // from a callback (or out of memory): report it, do not terminate
    if (!lk.owns_lock()) lk.lock();
    error = std::string("live session worker: ") + e.what();
    failed.store(true);
  } catch (...) {
    if (!lk.owns_lock()) lk.lock();
    error = "live session worker: unknown exception (from a callback?)";
    failed.store(true);
  }
  // Refuse later pushes (finishing) and free what is left (stopped or failed).
  finishing = true;
  stats.queued_samples = 0;
  std::vector<float>().swap(queue);
}

LiveSession::LiveSession(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

std::unique_ptr<LiveSession> LiveSession::start(Runner& runner, const SessionOptions& session_options,
                                                const LiveOptions& live_options, std::string* error) {
  auto fail = [&](const std::string& msg) -> std::unique_ptr<LiveSession> {
    if (error) *error = msg;
    return nullptr;
  };
  if (live_options.min_feed_ms < 0) return fail("min_feed_ms must be >= 0 (0 = feed as soon as audio arrives)");
  if (live_options.max_queue_ms < 0) return fail("max_queue_ms must be >= 0 (0 = unbounded)");
  auto impl = std::make_unique<Impl>();
  impl->session = runner.create_session(session_options, error);
  if (!impl->session) return nullptr;
  const auto per_ms = [&](int64_t ms) {
    return static_cast<size_t>(ms * runner.info().sample_rate / 1000);
  };
  impl->min_feed = std::max<size_t>(1, per_ms(live_options.min_feed_ms));
  impl->max_queue = per_ms(live_options.max_queue_ms);
  impl->max_feed = std::max<size_t>(1, per_ms(kMaxFeedMs));
  impl->on_text = live_options.on_text;
  Impl* p = impl.get();
  try {
    p->worker = std::thread([p] { p->run(); });
  } catch (const std::system_error& e) {
    return fail(std::string("cannot start the live session's worker thread: ") + e.what());
  }
  return std::unique_ptr<LiveSession>(new LiveSession(std::move(impl)));
}

LiveSession::~LiveSession() {
  stop();
  {
    std::lock_guard<std::mutex> lk(impl_->mu);
    impl_->finishing = true;
  }
  impl_->cv.notify_all();
  std::lock_guard<std::mutex> j(impl_->join_mu);
  if (impl_->worker.joinable()) impl_->worker.join();
}

bool LiveSession::push(const float* pcm16k, size_t n_samples) {
  Impl& d = *impl_;
  if (pcm16k == nullptr && n_samples > 0) return false;
  bool wake = false;
  {
    std::lock_guard<std::mutex> lk(d.mu);
    const auto n = static_cast<int64_t>(n_samples);
    if (d.stopped.load() || d.finishing || d.failed.load() ||
        (d.max_queue > 0 && d.queue.size() + n_samples > d.max_queue)) {
      d.stats.dropped_samples += n;
      return false;
    }
    if (n_samples == 0) return true;
    // Wake the worker only when the queue first reaches the threshold: it takes everything when it wakes.
    wake = d.queue.size() < d.min_feed && d.queue.size() + n_samples >= d.min_feed;
    d.queue.insert(d.queue.end(), pcm16k, pcm16k + n_samples);
    d.stats.pushed_samples += n;
    d.stats.queued_samples = static_cast<int64_t>(d.queue.size());
  }
  if (wake) d.cv.notify_one();
  return true;
}

bool LiveSession::finish() {
  Impl& d = *impl_;
  if (t_worker_of == &d) return false;  // from a callback on the worker: joining itself would deadlock
  {
    std::lock_guard<std::mutex> lk(d.mu);
    d.finishing = true;
  }
  d.cv.notify_all();
  std::lock_guard<std::mutex> j(d.join_mu);
  if (d.worker.joinable()) d.worker.join();
  return !d.failed.load();
}

void LiveSession::stop() {
  // Atomic stores only (see the header): the worker notices at its next wake-up or model call boundary, and
  // Session::stop() makes the running model call return early.
  impl_->stopped.store(true);
  impl_->session->stop();
}

std::string LiveSession::take_text() {
  std::lock_guard<std::mutex> lk(impl_->mu);
  std::string out;
  out.swap(impl_->text);
  return out;
}

bool LiveSession::failed() const { return impl_->failed.load(); }

std::string LiveSession::error() const {
  std::lock_guard<std::mutex> lk(impl_->mu);
  return impl_->error;
}

LiveStats LiveSession::stats() const {
  std::lock_guard<std::mutex> lk(impl_->mu);
  return impl_->stats;
}

Session& LiveSession::session() { return *impl_->session; }

}  // namespace voxtral_rt
