# ReasonAudio suite. `make help` lists the targets.
# Every target that needs Python calls `setup` first when .venv is missing, so a fresh machine needs one command.

PY      := .venv/bin/python
CLI     := $(PY) -m reasonaudio
DATA    := .venv/bin/reasonaudio-data
CFG     := lightning_configs
RUNS    := runs
ARGS    ?=

.DEFAULT_GOAL := help
.PHONY: help setup test test-fast demo synth check-fixtures bench clean \
        captions vae latent-stats vocoder bench-vocoder features pretrain reward preference-data post-train eval generate tensorboard

$(PY):
	$(MAKE) setup

help:  ## list every target
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  %-16s %s\n", $$1, $$2}'

setup:  ## create .venv and install the suite (pinned by constraints.txt)
	python3 -m venv .venv
	$(PY) -m pip install --upgrade pip -c constraints.txt >/dev/null
	$(PY) -m pip install -c constraints.txt -e '.[dev]'

test: | $(PY)  ## the full test suite (the command CI runs)
	$(PY) -m pytest -q --timeout=900

test-fast: | $(PY)  ## tests not marked slow
	$(PY) -m pytest -q -m "not slow"

demo: | $(PY)  ## the pipeline on built-in synthetic data (so far: synth, check, vocoder, vae, features)
	$(PY) -m reasonaudio.demo --out $(RUNS)/demo $(ARGS)

synth: | $(PY)  ## render the synthetic audio-visual corpus into runs/synth
	$(DATA) synth --out $(RUNS)/synth --num-clips 32 --seed 0 $(ARGS)

check-fixtures: | $(PY)  ## decode every shared fixture clip and report one JSON line per file
	$(DATA) check --jsonl ../shared/fixtures/media/*/* $(ARGS) || true

vae: | $(PY)  ## stage vae: train the mel VAE on the synthetic corpus
	$(CLI) fit --config $(CFG)/vae.yaml $(ARGS)

vocoder: | $(PY)  ## stage vocoder: train BigVGAN (tiny; ARGS="--config lightning_configs/vocoder/paper.yaml" for Table 7)
	$(CLI) fit --config $(CFG)/vocoder.yaml $(ARGS)

bench-vocoder: | $(PY)  ## real-time factor of our BigVGAN vs the bigvgan package → docs/benchmarks.md
	$(PY) benchmarks/vocoder.py --threads 1

features: | $(PY)  ## stage features: VAE posteriors + Synchformer tokens + MLLM frames into a feature cache (resumable)
	$(CLI) predict --config $(CFG)/features.yaml $(ARGS)

pretrain: | $(PY)  ## stage pretrain: MM-DiT flow matching from feature caches (EMA, fixed-grid validation, export)
	$(CLI) fit --config $(CFG)/pretrain.yaml $(ARGS)

DEMO     := $(RUNS)/demo
CKPT_G   ?= $(DEMO)/pretrain/pretrain/version_0/checkpoints/last.ckpt
FEATURES ?= $(DEMO)/features_corpus/logs/features/version_0/config.yaml
VOCODER  ?= $(DEMO)/vocoder/vocoder/version_0/checkpoints/last.ckpt
generate: | $(PY)  ## audio + mp4 for VIDEO=... [TEXT="..."] (default models: the demo's; OUT=runs/generate)
	.venv/bin/reasonaudio-generate --ckpt $(CKPT_G) --features-config $(FEATURES) --vocoder $(VOCODER) \
		--ema $(DEMO)/pretrain/export/model.safetensors $(if $(VIDEO),--video "$(VIDEO)") \
		$(if $(TEXT),--text "$(TEXT)") --out $(or $(OUT),$(RUNS)/generate) $(ARGS)

latent-stats: | $(PY)  ## per-channel latent mean/std of a trained VAE (CKPT=path/to/vae.ckpt), written into a checkpoint copy
	$(CLI) predict --config $(CFG)/vae.yaml --config $(CFG)/predict/latent_stats.yaml --ckpt_path $(CKPT) $(ARGS)

NOT_BUILT = echo "stage '$@' is not built yet: $(1) brings it (see the README's stage table)." >&2; exit 2

captions:  ## [not built yet] VGGSound-Think annotation (issue: VGGSound-Think construction)
	@$(call NOT_BUILT,the VGGSound-Think construction issue)
reward:  ## [not built yet] synchrony reward model (issue: preference post-training)
	@$(call NOT_BUILT,the preference post-training issue)
preference-data:  ## [not built yet] scored candidate groups (issue: preference post-training)
	@$(call NOT_BUILT,the preference post-training issue)
post-train:  ## [not built yet] SFT / RWR / Flow-DPO with LoRA (issue: preference post-training)
	@$(call NOT_BUILT,the preference post-training issue)
eval:  ## [not built yet] FD / KL / IS / CLAP / IB / DeSync (issue: evaluation)
	@$(call NOT_BUILT,the evaluation issue)
bench:  ## [not built yet] speed benchmarks into docs/benchmarks.md (issue: scale-out and demo)
	@$(call NOT_BUILT,the scale-out issue)

tensorboard: | $(PY)  ## serve TensorBoard over runs/
	.venv/bin/tensorboard --logdir $(RUNS)

clean:  ## remove run outputs (keeps .venv)
	rm -rf $(RUNS) .pytest_cache
