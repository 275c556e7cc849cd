# Sourced by scripts/test and scripts/bench-facility: a throw-away PostgreSQL server.
# Debian's packages (installed when missing, without their default cluster), a cluster
# made with initdb (as the postgres user when this runs as root: initdb refuses root)
# listening only on a private socket directory; `stop_pg` stops and removes it.
#
#   start_pg [server options]   sets pg_url (postgres://…?host=DIR&port=5432)
pg_dir=""
pg_as=()
pg_bin=""
pg_url=""
find_pg() { pg_bin="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)"; }
stop_pg() {
  if [ -n "$pg_dir" ]; then
    "${pg_as[@]}" "$pg_bin/pg_ctl" -D "$pg_dir/data" -m immediate stop >/dev/null 2>&1 || true
    rm -rf "$pg_dir"
    pg_dir=""
  fi
}
start_pg() {
  find_pg
  if [ -z "$pg_bin" ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    mkdir -p /etc/postgresql-common/createcluster.d
    echo "create_main_cluster = false" > /etc/postgresql-common/createcluster.d/ps-globus.conf
    apt-get update -qq && apt-get install -y -qq postgresql >/dev/null
    find_pg
  fi
  if [ -z "$pg_bin" ]; then
    echo "$0: this needs PostgreSQL's server (apt-get install postgresql)" >&2
    exit 1
  fi
  pg_dir="$(mktemp -d /tmp/ps-globus-pg.XXXXXX)"
  if [ "$(id -u)" = 0 ]; then
    chown postgres:postgres "$pg_dir"
    pg_as=(runuser -u postgres --)
  fi
  "${pg_as[@]}" "$pg_bin/initdb" -D "$pg_dir/data" -A trust -U ps_globus --no-sync -E UTF8 >/dev/null
  "${pg_as[@]}" "$pg_bin/pg_ctl" -D "$pg_dir/data" -l "$pg_dir/log" -w \
    -o "-k $pg_dir -c listen_addresses= -p 5432 $*" start >/dev/null
  pg_url="postgres://ps_globus@localhost/postgres?host=$pg_dir&port=5432"
}
