#!/usr/bin/env bash
# The default pipeline on one GPU, measured: a prepared script for a bare machine with one GPU,
# torch installed and no network. See benchmarks/README.md ("The default pipeline on one GPU").
#
#   bash benchmarks/gpu_pipeline.sh STAGE...      stages, in this order when given together:
#     setup     gather the carried parts of benchmarks/gpu_bundle (python benchmarks/gpu_bundle.py
#               make ... builds it here), install what is missing from its wheels, unpack the
#               preprocessed data cache into results/data
#     bench     one grid job: CUDA against CPU validation metrics, eager/compiled and fp32/bf16
#               images/s (writes auto_settings.json: what `auto` should do on this GPU), and
#               images/s against timm's ViT
#     main      the config's pipeline without its ablation: the partition, every grid run,
#               every run of the final recipe (shipped model and cross-validation runs:
#               pretraining, training, scoring), the baselines, the attention maps and the
#               shipped model file (targets from benchmarks/pipeline_stages.py main)
#     ablation  the rest (the default target): the ablation variants' runs, the summaries and
#               the report
#     all       setup bench main ablation
#
# Environment: OUT (output folder, default results/gpu_pipeline), VITCT_CONFIG (default
# config/config.yaml), VITCT_CORES (default: all), VITCT_GPU_SLOTS (training jobs sharing the
# GPU; default sized from its memory), VITCT_GPU_JOB_MIB (GPU memory one training job is given
# when sizing; default: bench's measured peak plus 1 GiB of CUDA context, else 4096), PYTHON
# (the interpreter that has torch; default python3).
set -euo pipefail

cd "$(dirname "$0")/.."
OUT=${OUT:-results/gpu_pipeline}
CONFIG=${VITCT_CONFIG:-config/config.yaml}
CORES=${VITCT_CORES:-$(nproc)}
PYTHON=${PYTHON:-python3}
mkdir -p "$OUT"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" # vitct from this tree, not installed
export PIP_NO_INDEX=1 PIP_DISABLE_PIP_VERSION_CHECK=1   # no network: never reach for an index

say() { echo "[gpu_pipeline $(date -u +%H:%M:%S)] $*" | tee -a "$OUT/run.log"; }
die() {
	say "ERROR: $*"
	exit 1
}

SAMPLER=""
trap '[ -z "$SAMPLER" ] || kill "$SAMPLER" 2>/dev/null' EXIT

has_gpu() { command -v nvidia-smi >/dev/null && nvidia-smi -L >/dev/null 2>&1; }

setup() {
	"$PYTHON" -c 'import torch' 2>/dev/null || die "torch is not importable by $PYTHON: this script brings everything but torch"
	say "python $("$PYTHON" -V 2>&1 | cut -d' ' -f2), torch $("$PYTHON" -c 'import torch; print(torch.__version__, "cuda", torch.cuda.is_available())')"
	"$PYTHON" benchmarks/gpu_bundle.py unpack --results results 2>&1 | tee -a "$OUT/run.log" >/dev/null ||
		die "the bundle is not complete here (see above); carry the missing parts and run setup again"
	local wheels=results/gpu_bundle/payload/wheels
	if [ -f "$wheels/requirements.txt" ]; then
		# Installs only what is missing or too old: whatever the machine has is kept (torch too).
		"$PYTHON" -m pip install -q --no-index --find-links "$wheels" -r "$wheels/requirements.txt" 2>&1 | tee -a "$OUT/run.log" ||
			die "pip could not install from $wheels: a wheel the device needs is missing (another Python version? make the bundle with that Python)"
	fi
	if compgen -G "$wheels/timm-*.whl" >/dev/null && "$PYTHON" -c 'import torchvision' 2>/dev/null; then
		"$PYTHON" -m pip install -q --no-index --no-deps "$wheels"/timm-*.whl || say "timm did not install: bench skips the comparison"
	fi
	"$PYTHON" -m snakemake --version >/dev/null || die "snakemake is not importable after setup"
	say "setup done: $("$PYTHON" -m snakemake --version | head -1 | sed 's/^/snakemake /')"
}

gpu_slots() {
	if [ -n "${VITCT_GPU_SLOTS:-}" ]; then
		echo "$VITCT_GPU_SLOTS"
		return
	fi
	if ! has_gpu; then
		echo "$CORES" # CPU path: the cores are the limit
		return
	fi
	local total job
	total=$(nvidia-smi --query-gpu=memory.total --format=csv,noheader,nounits | head -1)
	job=${VITCT_GPU_JOB_MIB:-}
	if [ -z "$job" ] && [ -f "$OUT/bench/grid_job_bf16_compiled_patch8.json" ]; then
		job=$("$PYTHON" -c 'import json, sys; print(json.load(open(sys.argv[1]))["peak_gpu_mib"] + 1024)' "$OUT/bench/grid_job_bf16_compiled_patch8.json")
	fi
	job=${job:-4096}
	echo $((total * 9 / 10 / job))
}

sample_gpu() {
	# One line a second: unix time, utilisation %, memory MiB (pipeline_figures.py reads them).
	while true; do
		echo "$(date +%s.%N),$(nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader,nounits | head -1)"
		sleep 1
	done >>"$OUT/gpu_samples.csv"
}

run_pipeline() { # $1: main or ablation
	local name=$1 slots dataset started ended sampler=""
	dataset=$("$PYTHON" benchmarks/gpu_bundle.py describe dataset) || die "no unpacked cache: run the setup stage first"
	slots=$(gpu_slots)
	[ "$slots" -ge 1 ] || die "the GPU's memory fits no training job (gpu_slots $slots); set VITCT_GPU_SLOTS"
	say "$name: $CONFIG, data from the $("$PYTHON" benchmarks/gpu_bundle.py describe origin)"
	say "$name: $CORES cores, gpu_slots $slots"
	local targets
	targets=$("$PYTHON" benchmarks/pipeline_stages.py "$name" --configfile "$CONFIG") ||
		die "$name: could not list the stage's targets for $CONFIG"
	read -r -d '' -a targets <<<"$targets" || true # one a line; run paths hold no spaces
	say "$name: ${#targets[@]} target(s): ${targets[*]:0:4}$([ ${#targets[@]} -le 4 ] || echo ' ...')"
	if has_gpu; then
		sample_gpu &
		sampler=$!
		SAMPLER=$sampler # stopped on exit too
	fi
	started=$(date +%s.%N)
	local rc=0
	# The targets first: --config and --resources take every word after them.
	"$PYTHON" -m snakemake "${targets[@]}" --profile profiles/gpu --configfile "$CONFIG" \
		--config "$dataset" --cores "$CORES" --resources gpu_slots="$slots" >"$OUT/snakemake_$name.log" 2>&1 || rc=$?
	ended=$(date +%s.%N)
	if [ -n "$sampler" ]; then
		kill "$sampler"
		SAMPLER=""
	fi
	printf '%s\t%s\t%s\t%s\n' "$name" "$(awk "BEGIN {printf \"%.1f\", $ended - $started}")" "$slots" "$rc" >>"$OUT/wall_times.tsv"
	[ "$rc" -eq 0 ] || die "$name: snakemake failed (exit $rc); see $OUT/snakemake_$name.log"
	mkdir -p "$OUT/$name"
	"$PYTHON" benchmarks/pipeline_figures.py --results results --out "$OUT/$name" --gpu-samples "$OUT/gpu_samples.csv" >"$OUT/$name/summary.txt" 2>&1 ||
		die "$name: could not gather the figures; see $OUT/$name/summary.txt"
	say "$name: done in $(tail -1 "$OUT/wall_times.tsv" | cut -f2) s; figures in $OUT/$name/"
}

bench() {
	mkdir -p "$OUT/bench"
	if ! has_gpu; then
		say "bench: no GPU here, nothing measured (the pipeline stages still run on the CPU)"
		echo "no GPU: nothing measured" >"$OUT/bench/skipped.txt"
		return
	fi
	nvidia-smi >"$OUT/bench/nvidia-smi.txt"
	local job="$PYTHON benchmarks/gpu_train_job.py --epochs 30 --n-per-class 980"
	say "bench: one grid job (patch 8, 3 epochs) on CUDA and on the CPU"
	$PYTHON benchmarks/gpu_train_job.py --patch 8 --cpu-check --json "$OUT/bench/cuda_vs_cpu_patch8.json" >>"$OUT/bench/bench.log" 2>&1 ||
		say "bench: the CUDA-against-CPU job failed; see $OUT/bench/bench.log"
	for patch in 8 32; do # the sweep's slowest and fastest jobs, full length (30 epochs, 1,372 images)
		say "bench: patch $patch: fp32 eager, bf16 eager, bf16 compiled"
		$job --patch $patch --compile never --bf16 never --json "$OUT/bench/grid_job_fp32_eager_patch$patch.json" >>"$OUT/bench/bench.log" 2>&1 || say "bench: patch $patch failed; see $OUT/bench/bench.log"
		$job --patch $patch --compile never --bf16 always --json "$OUT/bench/grid_job_bf16_eager_patch$patch.json" >>"$OUT/bench/bench.log" 2>&1 || say "bench: patch $patch failed; see $OUT/bench/bench.log"
		$job --patch $patch --compile always --bf16 always --json "$OUT/bench/grid_job_bf16_compiled_patch$patch.json" >>"$OUT/bench/bench.log" 2>&1 || say "bench: patch $patch failed; see $OUT/bench/bench.log"
	done
	"$PYTHON" benchmarks/auto_settings.py "$OUT/bench" >"$OUT/bench/auto_settings.json" ||
		say "bench: no auto settings (a job failed)"
	say "bench: auto settings measured: $(tr -d '\n' <"$OUT/bench/auto_settings.json" | cut -c1-300)"
	if "$PYTHON" -c 'import timm' 2>/dev/null; then
		say "bench: images/s against timm's ViT"
		"$PYTHON" benchmarks/throughput_vs_timm.py --device cuda --rounds 1 --compile >"$OUT/bench/throughput_vs_timm.txt" 2>&1
	else
		echo "timm is not installed here (make the bundle with --with-timm)" | tee "$OUT/bench/throughput_vs_timm.txt"
	fi
}

[ $# -ge 1 ] || die "usage: bash benchmarks/gpu_pipeline.sh setup|bench|main|ablation|all ..."
for stage in "$@"; do
	case $stage in
	setup) setup ;;
	bench) bench ;;
	main) run_pipeline main ;;
	ablation) run_pipeline ablation ;;
	all) setup && bench && run_pipeline main && run_pipeline ablation ;;
	*) die "unknown stage '$stage' (setup, bench, main, ablation, all)" ;;
	esac
done
