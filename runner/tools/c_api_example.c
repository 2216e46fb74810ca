/* c_api_example.c -- transcribe an audio file through the C API (voxtral_rt_c.h), streaming it in chunks as an
 * app would feed a microphone. Compiled as C99 against libvoxtral_rt.so:
 *
 *   cc -std=c99 c_api_example.c -Irunner/include -Lrunner/build -lvoxtral_rt -Wl,-rpath,runner/build
 *   ./a.out model.pte tekken.json a.wav [chunk_ms] [delay_ms]
 *
 * stdout: the text as it comes, then each segment "[start ms - end ms] text" and its words "start-end word".
 * stderr: "tokens: <ids>" (every generated id; tests compare them with the CLI's --json), errors.
 * Exit codes as the CLI: 1 bad arguments, 2 model load, 3 audio, 4 inference. */
#include <stdio.h>
#include <stdlib.h>

#include "voxtral_rt/voxtral_rt_c.h"

/* Called for every generated token, from inside feed()/flush(); user_data is the counter we passed. */
static void on_token(const voxtral_rt_token* token, void* user_data) {
  long* n_text_tokens = (long*)user_data;
  if (!token->is_special) ++*n_text_tokens;
}

int main(int argc, char** argv) {
  char err[512];
  int code = 0;
  long n_text_tokens = 0;
  if (argc < 4 || argc > 6) {
    fprintf(stderr, "usage: %s MODEL.pte TEKKEN.json AUDIO [chunk_ms (80)] [delay_ms (-1 = model default)]\n",
            argv[0]);
    return 1;
  }
  const int chunk_ms = argc > 4 ? atoi(argv[4]) : 80;
  if (chunk_ms <= 0) {
    fprintf(stderr, "error: chunk_ms must be > 0\n");
    return 1;
  }
  fprintf(stderr, "voxtral_rt %s\n", voxtral_rt_version());
  voxtral_rt_log_route_executorch(); /* ExecuTorch's start-up lines go to the library's log (Info and up: stderr) */

  voxtral_rt_model_params mp = voxtral_rt_model_default_params();
  mp.model_path = argv[1];
  mp.tokenizer_path = argv[2];
  voxtral_rt_model* model = voxtral_rt_model_load(&mp, err, sizeof err);
  if (!model) {
    fprintf(stderr, "error: %s\n", err);
    return 2;
  }
  const int32_t rate = voxtral_rt_model_sample_rate(model);
  voxtral_rt_audio* audio = voxtral_rt_audio_load(argv[3], rate, err, sizeof err);
  if (!audio) {
    fprintf(stderr, "error: %s\n", err);
    voxtral_rt_model_free(model);
    return 3;
  }

  voxtral_rt_session_params sp = voxtral_rt_session_default_params();
  if (argc > 5) sp.delay_ms = atoi(argv[5]);
  sp.token_callback = on_token;
  sp.token_callback_user_data = &n_text_tokens;
  voxtral_rt_session* s = voxtral_rt_session_create(model, &sp, err, sizeof err);
  if (!s) {
    fprintf(stderr, "error: %s\n", err);
    code = 1;
  } else {
    const float* pcm = voxtral_rt_audio_samples(audio);
    const size_t n = voxtral_rt_audio_n_samples(audio);
    const size_t chunk = (size_t)rate * (size_t)chunk_ms / 1000;
    for (size_t i = 0; i < n && code == 0; i += chunk) {
      const size_t len = n - i < chunk ? n - i : chunk;
      if (voxtral_rt_session_feed(s, pcm + i, len) < 0) code = 4;
      fputs(voxtral_rt_session_take_text(s), stdout); /* new text, as it comes */
      fflush(stdout);
    }
    if (code == 0 && voxtral_rt_session_flush(s) < 0) code = 4;
    if (code != 0) {
      fprintf(stderr, "error: %s\n", voxtral_rt_session_error(s));
    } else {
      printf("%s\n", voxtral_rt_session_take_text(s));
      for (size_t i = 0; i < voxtral_rt_session_n_segments(s); ++i) { /* pointers valid until the next feed */
        const voxtral_rt_segment* seg = voxtral_rt_session_segment(s, i);
        printf("[%.0f ms - %.0f ms]%s\n", seg->start_ms, seg->end_ms, seg->text);
        for (size_t j = 0; j < seg->n_words; ++j)
          printf("    %.0f-%.0f %s\n", seg->words[j]->start_ms, seg->words[j]->end_ms, seg->words[j]->text);
      }
      const int64_t* ids = voxtral_rt_session_token_ids(s);
      fprintf(stderr, "%ld text tokens; tokens:", n_text_tokens);
      for (size_t i = 0; i < voxtral_rt_session_n_tokens(s); ++i) fprintf(stderr, " %lld", (long long)ids[i]);
      fprintf(stderr, "\n");
    }
    voxtral_rt_session_free(s);
  }
  voxtral_rt_audio_free(audio);
  voxtral_rt_model_free(model);
  return code;
}
