# Sourced by the build tests: make_libtorch_folder DIR lays out Debian's
# libtorch files as an official libtorch zip has them (include/ with ATen,
# c10, caffe2 and torch; lib/ with the libraries under their sonames and the
# names the linker looks for), so a test can point LIBTORCH at a libtorch
# that is not /usr.
make_libtorch_folder() {
  local dir=$1 lib=/usr/lib/x86_64-linux-gnu name real soname
  mkdir -p "$dir/include" "$dir/lib"
  cp -r /usr/include/ATen /usr/include/c10 /usr/include/caffe2 /usr/include/torch "$dir/include/"
  for name in libtorch libtorch_cpu libc10; do
    real=$(readlink -f "$lib/$name.so")
    soname=$(readelf -d "$real" | sed -n 's/.*SONAME.*\[\(.*\)\]/\1/p')
    ln -s "$real" "$dir/lib/$soname"
    ln -s "$soname" "$dir/lib/$name.so"
  done
}
