# Shell functions for a throwaway PostgreSQL cluster on a free loopback port.
# initdb refuses to run as root, so as root the cluster runs as the unprivileged `nobody`.
# Source this file, then: pg_throwaway_start DIR  (sets PG_PORT, PG_URL); pg_throwaway_stop DIR

pg_bindir() {
  local d
  d=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
  [[ -n "$d" ]] || { echo "PostgreSQL server binaries not found (install postgresql)" >&2; return 1; }
  echo "$d"
}

pg_as_owner() {
  if [[ $(id -u) -eq 0 ]]; then runuser -u nobody -- "$@"; else "$@"; fi
}

free_port() {
  local port
  for _ in $(seq 1 200); do
    port=$((20000 + RANDOM % 20000))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then echo "$port"; return 0; fi
  done
  echo "no free port found" >&2
  return 1
}

pg_throwaway_start() {
  local dir=$1 bin
  bin=$(pg_bindir)
  mkdir -p "$dir"
  [[ $(id -u) -eq 0 ]] && chown nobody "$dir"
  PG_PORT=$(free_port)
  pg_as_owner "$bin/initdb" -D "$dir/data" -A trust -U postgres -E UTF8 --no-sync >"$dir/initdb.log" 2>&1 ||
    { cat "$dir/initdb.log" >&2; return 1; }
  pg_as_owner "$bin/pg_ctl" -w -t 60 -D "$dir/data" -l "$dir/server.log" \
    -o "-p $PG_PORT -c listen_addresses=127.0.0.1 -k $dir" start >/dev/null ||
    { tail -20 "$dir/server.log" >&2; return 1; }
  PG_URL="postgresql://postgres@127.0.0.1:$PG_PORT/postgres"
  export PG_PORT PG_URL
}

pg_throwaway_stop() {
  local dir=$1 bin
  bin=$(pg_bindir)
  [[ -d "$dir/data" ]] && pg_as_owner "$bin/pg_ctl" -D "$dir/data" -m fast stop >/dev/null 2>&1 || true
  rm -rf "$dir"
}
