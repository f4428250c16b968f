#!/bin/sh
# keel installed as a user installs it, then used from outside the tree:
#
#   cmake --install BUILD --prefix TMP, and the files a Debian-style
#   library has (programs, libkeel.so with its soname, libkeel.a, keel.h,
#   keel.pc, the CMake package, the man pages, keeld's systemd unit and
#   example configuration);
#   examples/embed.c built with pkg-config alone against libkeel.so, and
#   against libkeel.a with pkg-config --static, each run twice (the
#   counter it keeps is durable: 1, then 2);
#   the same program built by a CMake project through find_package(keel)
#   and keel::keel, and a version the package must refuse;
#   the man pages render without a warning and document every option (and
#   keel's every command) that the programs' --help lists.
#
#   sh test_install.sh BUILD_DIR SOURCE_DIR CC CMAKE LIBDIR VERSION
#
# The build may be a sanitized one: keel.pc and keel::keel then carry the
# -fsanitize flags its users must link with, and CC is the compiler that
# built it (the sanitizer runtimes are the compiler's own).
set -eu
unset LD_LIBRARY_PATH

build=$1 src=$2 cc=$3 cmake=$4 libdir=$5 version=$6
major=${version%%.*}
tmp=$(mktemp -d "${TMPDIR:-/tmp}/keel-install.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
p=$tmp/prefix

fail() {
    echo "test_install: FAIL: $*" >&2
    exit 1
}
step() {
    echo "test_install: $*"
}

step "cmake --install $build --prefix $p"
"$cmake" --install "$build" --prefix "$p" >"$tmp/install.log" 2>&1 ||
    { cat "$tmp/install.log" >&2; fail "cmake --install failed"; }

for f in bin/keeld bin/keel bin/keel-bench bin/keel-chaos; do
    [ -x "$p/$f" ] || fail "$f is not installed (or not executable)"
done
for f in "$libdir/libkeel.so.$version" "$libdir/libkeel.a" include/keel.h \
         "$libdir/pkgconfig/keel.pc" "$libdir/cmake/keel/keelConfig.cmake" \
         "$libdir/cmake/keel/keelConfigVersion.cmake" \
         "$libdir/cmake/keel/keelTargets.cmake" \
         share/man/man8/keeld.8 share/man/man1/keel.1 \
         share/keel/zk-conf/zk.sh share/keel/zk-conf/zoo.cfg.in; do
    [ -f "$p/$f" ] || fail "$f is not installed"
done
# keeld's systemd unit names this prefix's keeld and configuration file;
# the example configuration is among the docs, and it passes the
# installed keeld's --check-config. Nothing goes to /etc for a prefix
# other than /usr.
unit=$p/lib/systemd/system/keeld.service
[ -f "$unit" ] || fail "lib/systemd/system/keeld.service is not installed"
grep -qx "ExecStart=$p/bin/keeld --config $p/etc/keel/keeld.conf" "$unit" ||
    fail "keeld.service's ExecStart does not name $p/bin/keeld and $p/etc/keel/keeld.conf"
grep -q "/usr/bin/keeld" "$unit" && fail "keeld.service still names /usr/bin/keeld"
[ -f "$p/share/doc/keel/examples/keeld.conf" ] ||
    fail "share/doc/keel/examples/keeld.conf is not installed"
[ ! -e "$p/etc" ] || fail "cmake --install wrote $p/etc"
"$p/bin/keeld" --config "$p/share/doc/keel/examples/keeld.conf" \
    --data "$tmp/data" --check-config >"$tmp/check.out" 2>&1 ||
    { cat "$tmp/check.out" >&2; fail "the installed example fails --check-config"; }
# The development link and the soname link, as ldconfig would make them.
[ "$(readlink "$p/$libdir/libkeel.so")" = "libkeel.so.$major" ] ||
    fail "libkeel.so does not point to libkeel.so.$major"
[ "$(readlink "$p/$libdir/libkeel.so.$major")" = "libkeel.so.$version" ] ||
    fail "libkeel.so.$major does not point to libkeel.so.$version"
soname=$(readelf -d "$p/$libdir/libkeel.so.$version" |
         sed -n 's/.*(SONAME).*\[\(.*\)\]/\1/p')
[ "$soname" = "libkeel.so.$major" ] ||
    fail "soname is '$soname', not libkeel.so.$major"
[ "$("$p/bin/keel" --version)" = "keel $version" ] ||
    fail "installed keel --version does not say 'keel $version'"
[ "$("$p/bin/keeld" --version)" = "keeld $version" ] ||
    fail "installed keeld --version does not say 'keeld $version'"

# ---- pkg-config, from a directory outside the tree ----
export PKG_CONFIG_PATH="$p/$libdir/pkgconfig"
c=$tmp/consumer
mkdir "$c"
cp "$src/examples/embed.c" "$c/embed.c"
[ "$(pkg-config --modversion keel)" = "$version" ] ||
    fail "pkg-config --modversion keel is not $version"
cflags=$(pkg-config --cflags keel) || fail "pkg-config --cflags keel"
libs=$(pkg-config --libs keel) || fail "pkg-config --libs keel"
case " $cflags " in
*" -I$p/include "*) ;;
*) fail "pkg-config --cflags keel gives '$cflags', not -I$p/include" ;;
esac

# run NAME PROGRAM: the embedding example on a data directory of its own,
# twice; the hit counter is stored, so the second run must see the first.
run() {
    for n in 1 2; do
        out=$("$2" "$c/$1-data") || fail "$1: run $n exited $?"
        [ "$out" = "home page hits: $n" ] ||
            fail "$1: run $n printed '$out', not 'home page hits: $n'"
    done
}

step "shared: $cc \$(pkg-config --cflags keel) embed.c \$(pkg-config --libs keel)"
# shellcheck disable=SC2086
(cd "$c" && "$cc" $cflags embed.c -o embed-shared $libs) ||
    fail "embed.c does not build against the installed libkeel.so"
readelf -d "$c/embed-shared" | grep -q "NEEDED.*\[libkeel.so.$major\]" ||
    fail "embed-shared does not need libkeel.so.$major"
LD_LIBRARY_PATH="$p/$libdir" ldd "$c/embed-shared" |
    grep -q "libkeel.so.$major => $p/$libdir/libkeel.so.$major" ||
    fail "embed-shared does not load the installed libkeel.so.$major"
export LD_LIBRARY_PATH="$p/$libdir"
run shared "$c/embed-shared"
unset LD_LIBRARY_PATH

# Static: libkeel.a named on its own (with libkeel.so beside it, -lkeel
# would take the .so), everything else as pkg-config --static lists it.
step "static: libkeel.a and \$(pkg-config --static --libs keel)"
slibs=$(pkg-config --static --libs keel) ||
    fail "pkg-config --static --libs keel (a dependency's .pc missing?)"
slibs=$(echo " $slibs " | sed 's/ -lkeel / -l:libkeel.a /')
# shellcheck disable=SC2086
(cd "$c" && "$cc" $cflags embed.c -o embed-static $slibs) ||
    fail "embed.c does not link statically with pkg-config --static's list"
if readelf -d "$c/embed-static" | grep -q "NEEDED.*libkeel"; then
    fail "embed-static needs libkeel.so; it should hold libkeel.a's code"
fi
run static "$c/embed-static"

# ---- find_package(keel) ----
cm=$tmp/cmake-consumer
mkdir "$cm"
cp "$src/examples/embed.c" "$cm/embed.c"
cat >"$cm/CMakeLists.txt" <<'EOF'
cmake_minimum_required(VERSION 3.18)
project(keel_consumer C)
find_package(keel ${KEEL_WANT} REQUIRED)
add_executable(embed embed.c)
target_link_libraries(embed PRIVATE keel::keel)
EOF
step "find_package(keel $version) and keel::keel"
"$cmake" -S "$cm" -B "$cm/build" -DCMAKE_C_COMPILER="$cc" \
    -DCMAKE_PREFIX_PATH="$p" -DKEEL_WANT="$version" \
    >"$tmp/cmake.log" 2>&1 ||
    { cat "$tmp/cmake.log" >&2; fail "find_package(keel $version) failed"; }
"$cmake" --build "$cm/build" >"$tmp/cmake-build.log" 2>&1 ||
    { cat "$tmp/cmake-build.log" >&2; fail "the CMake consumer does not build"; }
# No LD_LIBRARY_PATH: CMake's build tree run path finds the installed .so.
run cmake "$cm/build/embed"
step "find_package(keel $((major + 1)).0) must fail"
if "$cmake" -S "$cm" -B "$cm/build-next" -DCMAKE_C_COMPILER="$cc" \
        -DCMAKE_PREFIX_PATH="$p" -DKEEL_WANT="$((major + 1)).0" \
        >"$tmp/cmake-next.log" 2>&1; then
    fail "find_package(keel $((major + 1)).0) accepted keel $version"
fi
grep -q "keelConfig.cmake, version: $version" "$tmp/cmake-next.log" ||
    { cat "$tmp/cmake-next.log" >&2
      fail "find_package(keel $((major + 1)).0) failed, not for the version"; }

# ---- man pages ----
# render PAGE: plain text, wide and unhyphenated, so that every option
# stays on one line.
render() {
    LC_ALL=C groff -man -Tascii -P-cbou -rLL=300n -rHY=0 "$1" 2>/dev/null
}
for page in share/man/man8/keeld.8 share/man/man1/keel.1; do
    step "man -l $page"
    LC_ALL=C groff -man -ww -z "$p/$page" 2>"$tmp/groff.err" || fail "groff $page"
    [ ! -s "$tmp/groff.err" ] ||
        { cat "$tmp/groff.err" >&2; fail "groff warns about $page"; }
    LC_ALL=C MANWIDTH=80 man -l --warnings=all "$p/$page" >"$tmp/man.out" \
        2>"$tmp/man.err" || fail "man -l $page exited $?"
    [ ! -s "$tmp/man.err" ] ||
        { cat "$tmp/man.err" >&2; fail "man -l warns about $page"; }
    grep -q "^SYNOPSIS" "$tmp/man.out" || fail "man -l $page: no SYNOPSIS"
done

# has_tag TEXT OPTION: OPTION starts an item of the page (".TP" tag),
# alone or after a short option ("-a HOST:PORT, --addr HOST:PORT").
has_tag() {
    grep -Eq -- "^ +(-[A-Za-z][^,]*, )?$2( |,|\$)" "$1"
}
render "$p/share/man/man8/keeld.8" >"$tmp/keeld.txt"
opts=$("$p/bin/keeld" --help | grep -Eo -- '--[a-z][a-z-]*' | sort -u)
[ -n "$opts" ] || fail "keeld --help lists no options"
for o in $opts; do
    has_tag "$tmp/keeld.txt" "$o" || fail "keeld.8 does not document $o"
done

render "$p/share/man/man1/keel.1" >"$tmp/keel.txt"
"$p/bin/keel" --help >"$tmp/keel.help"
opts=$(sed -n '/^options:/,$p' "$tmp/keel.help" |
       grep -Eo -- '(^|[ ,])-(-[a-z][a-z-]*|[A-Za-z])\b' | tr -d ' ,' |
       sort -u)
[ -n "$opts" ] || fail "keel --help lists no options"
for o in $opts; do
    has_tag "$tmp/keel.txt" "$o" || fail "keel.1 does not document $o"
done
cmds=$(sed -n '/^commands:/,/^$/p' "$tmp/keel.help" |
       sed -n 's/^  \([a-z][a-z-]*\( [a-z][a-z-]*\)\{0,1\}\)\( .*\)\{0,1\}$/\1/p')
[ -n "$cmds" ] || fail "keel --help lists no commands"
printf '%s\n' "$cmds" >"$tmp/keel.cmds"
while read -r cmd; do
    grep -Eq "^ +$cmd( |\$)" "$tmp/keel.txt" ||
        fail "keel.1 does not document the command '$cmd'"
done <"$tmp/keel.cmds"
step "ok"
