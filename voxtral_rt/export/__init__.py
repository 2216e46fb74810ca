"""The exporter's library; export/export_voxtral_rt.py is its command line. One module a job:
  memory     glibc's allocator tuned for gigabyte-sized temporaries, and the progress log (time, RSS)
  toolchain  workarounds in internals of the pinned torch / executorch, each with its version and reason
  quantize   torchao quantization one block at a time, and the plain-tensor modules torch.export takes cheaply
  prepare    the Voxtral checkpoint loaded, cast and quantized block by block, ready to export
  lower      torch.export of each method, lowering to XNNPACK, one ExecuTorch program
What they write is the .pte contract of voxtral_rt/pte.py; docs/design.md, "Export pipeline", says why."""
