#!/usr/bin/env bash
# Checks the Dockerfile's runtime stage against the built binary, without a Docker engine:
# every shared library `ldd` resolves is owned (dpkg -S) by a package that debian:bookworm-slim
# already has, or that the runtime stage installs, or that apt pulls in as a dependency of
# those; the libraries the binary links directly (NEEDED) come from a package the stage names
# itself (or the base set). Also: no -dev package at run time, a non-root USER, and an
# ENTRYPOINT of outbox-relay. Package data is this machine's dpkg database (Debian 12, the
# image's release), so nothing is fetched.
# Usage: check_dockerfile.sh DOCKERFILE BINARY
set -euo pipefail
dockerfile=$1 binary=$2
fail=0

# The runtime stage: from the last FROM to the end.
runtime=$(awk '/^FROM /{buf=""} {buf=buf $0 "\n"} END{printf "%s", buf}' "$dockerfile")
echo "== runtime stage: $(head -1 <<<"$runtime")"
grep -q '^FROM debian:bookworm-slim' <<<"$runtime" || { echo "FAIL: runtime stage is not FROM debian:bookworm-slim"; fail=1; }

# Packages named by its apt-get install (continuation lines joined; options and && dropped).
installed=$(sed ':a;/\\$/{N;s/\\\n/ /;ba}' <<<"$runtime" | grep -o 'apt-get install[^&]*' |
            sed 's/apt-get install//' | tr ' ' '\n' | grep -v '^-' | grep -v '^$' | sort -u)
echo "runtime stage installs: $(tr '\n' ' ' <<<"$installed")"

# debian:bookworm-slim is a minbase debootstrap: every Priority required or Essential package,
# and (so apt works) their dependencies. libc6, libstdc++6 and libgcc-s1 are Priority optional
# yet always there as dependencies of essential packages; the closure below finds them.
# One read of the dpkg database: "package<TAB>depends" for every installed package.
dpkg_db=$(dpkg-query -W -f='${Package}\t${db:Status-Abbrev}\t${Depends}, ${Pre-Depends}\n' | awk -F'\t' '$2 ~ /^ii/ {print $1 "\t" $3}')
closure() {  # the packages on stdin and every installed package they Depend on, recursively
  awk -F'\t' '
    NR == FNR { deps[$1] = $2; next }
    { queue[n++] = $1 }
    END {
      for (i = 0; i < n; i++) {
        p = queue[i]
        if (p == "" || (p in seen)) continue
        seen[p] = 1
        k = split(deps[p], groups, ",")
        for (g = 1; g <= k; g++) {          # "a (>= 1) | b": the first alternative installed here
          m = split(groups[g], alts, "|")
          for (a = 1; a <= m; a++) {
            c = alts[a]; sub(/\(.*\)/, "", c); sub(/:any/, "", c); gsub(/ /, "", c)
            if (c in deps) { queue[n++] = c; break }
          }
        }
      }
      for (p in seen) print p
    }' <(printf '%s\n' "$dpkg_db") - | sort
}
base=$(dpkg-query -W -f='${Package} ${Priority} ${Essential}\n' | awk '$2 == "required" || $3 == "yes" {print $1}' | closure)
echo "base set (Priority required or Essential, with dependencies): $(wc -l <<<"$base") packages, e.g. $(grep -x -e libc6 -e libstdc++6 -e libgcc-s1 <<<"$base" | tr '\n' ' ')"
pulled=$(closure <<<"$installed")

# Which package owns each library. Debian 12 is /usr-merged, so dpkg may know a file under /lib
# or under /usr/lib, by the name ldd printed or by the symlink's target: ask for all of them in
# one dpkg -S call (one call reads the file lists once) and take the first that is known.
libs=$(ldd "$binary" | awk '$2 == "=>" && $3 ~ /^\// {print $1, $3}')
variants() { local c p; for c in "$1" "$(readlink -f "$1")"; do for p in "$c" "${c#/usr}" "/usr$c"; do echo "$p"; done; done; }
owners=$(while read -r _ path; do variants "$path"; done <<<"$libs" | sort -u | xargs dpkg -S 2>/dev/null || true)
owner() {
  local v
  for v in $(variants "$1"); do
    awk -v p="$v" '$1 != "diversion" && $NF == p {sub(/[:,].*/, "", $1); print $1; found = 1; exit} END {exit !found}' <<<"$owners" && return 0
  done
  return 1
}

needed=$(objdump -p "$binary" | awk '$1 == "NEEDED" {print $2}')
echo "== libraries of $binary"
printf '%-26s %-24s %-6s %s\n' library package link "provided by"
while read -r lib path; do
  if [[ $lib =~ ^lib(a|ub|t|l|hwa)san\. ]]; then  # OUTBOX_SANITIZE=1 build: not what the image ships
    printf '%-26s %-24s %-6s %s\n' "$lib" - - "skipped: sanitizer runtime"; continue
  fi
  pkg=$(owner "$path") || { echo "FAIL: no Debian package owns $path ($lib)"; fail=1; continue; }
  direct=$(grep -qx "$lib" <<<"$needed" && echo direct || echo dep)
  if grep -qx "$pkg" <<<"$base"; then how="base image"
  elif grep -qx "$pkg" <<<"$installed"; then how="apt-get install line"
  elif [[ $direct == dep ]] && grep -qx "$pkg" <<<"$pulled"; then how="dependency of the install line"
  else how="MISSING"; fail=1
  fi
  printf '%-26s %-24s %-6s %s\n' "$lib" "$pkg" "$direct" "$how"
done <<<"$libs"
((fail)) && echo "FAIL: add the MISSING packages to the runtime stage's apt-get install"

echo "== runtime stage rules"
# `COPY . .` into the build stage must not bring a host build directory (its CMakeCache.txt
# names another source path and cmake refuses it).
if grep -q '^COPY \. ' "$dockerfile"; then
  ignore="$(dirname "$dockerfile")/.dockerignore"
  if [[ -f "$ignore" ]] && grep -Eqx '/?build\*?/?' "$ignore"; then
    echo "ok: .dockerignore keeps build directories out of COPY . ."
  else
    echo "FAIL: COPY . . without a .dockerignore entry for build*/"; fail=1
  fi
fi
for p in $installed; do
  if [[ $p == *-dev ]]; then echo "FAIL: runtime stage installs $p"; fail=1; fi
  if ! dpkg-query -W -f='${Package}\n' "$p" >/dev/null 2>&1 && ! apt-cache show "$p" >/dev/null 2>&1; then
    echo "FAIL: $p is not a Debian 12 package known here"; fail=1
  fi
done
echo "ok: checked for -dev packages and unknown names: $(wc -w <<<"$installed") packages"
user=$(grep '^USER ' <<<"$runtime" | tail -1 | awk '{print $2}')
if [[ -z "$user" || "$user" == root || "$user" == 0 || "$user" == 0:* ]]; then
  echo "FAIL: runtime stage must end with a non-root USER (found '${user:-none}')"; fail=1
else
  echo "ok: USER $user"
fi
entry=$(grep '^ENTRYPOINT ' <<<"$runtime" | tail -1)
if grep -Eq '^ENTRYPOINT \["[^"]*/outbox-relay"\]$' <<<"$entry"; then
  echo "ok: $entry"
else
  echo "FAIL: expected ENTRYPOINT [\".../outbox-relay\"], found '${entry:-none}'"; fail=1
fi
bin_dest=$(grep -o '^COPY --from=[^ ]* [^ ]*outbox-relay [^ ]*' <<<"$runtime" | awk '{print $NF}')
if [[ -n "$bin_dest" ]] && grep -qF "\"$bin_dest\"" <<<"$entry"; then
  echo "ok: ENTRYPOINT runs the copied binary $bin_dest"
else
  echo "FAIL: ENTRYPOINT does not run the binary copied from the build stage ('$bin_dest')"; fail=1
fi

((fail == 0)) && echo "Dockerfile: all checks passed"
exit "$fail"
