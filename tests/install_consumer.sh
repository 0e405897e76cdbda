#!/bin/sh
# Install the build into a scratch prefix, then build and run a consumer
# program with nothing but `pkg-config --cflags --libs moevk`.
# usage: install_consumer.sh BUILD_DIR SOURCE_DIR
set -eu
build=$1
src=$2
dest=$(mktemp -d)
trap 'rm -rf "$dest"' EXIT
meson install -C "$build" --destdir "$dest" --no-rebuild --quiet
pc=$(find "$dest" -name moevk.pc | head -n 1)
[ -n "$pc" ] || { echo "moevk.pc was not installed"; exit 1; }
export PKG_CONFIG_PATH=$(dirname "$pc")
prefix=$(pkg-config --variable=prefix moevk)
pcflags="--define-variable=prefix=$dest$prefix"
flags=$(pkg-config $pcflags --cflags --libs moevk)
echo "pkg-config: $flags"
${CC:-cc} -std=c11 -Wall -Wextra -Werror "$src/examples/consumer.c" $flags -o "$dest/consumer"
libdir=$(pkg-config $pcflags --variable=libdir moevk)
LD_LIBRARY_PATH=$libdir "$dest/consumer"
