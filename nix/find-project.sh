# Outside a checkout (no services.json + versions.env in this folder or a parent), run on the
# catalogue and versions the package was built with, keeping state in the user's state folder.
if [ -z "${VIRTUFIN_HOME:-}" ]; then
  virtufin_dir=$PWD
  while [ -n "$virtufin_dir" ] && ! { [ -f "$virtufin_dir/services.json" ] && [ -f "$virtufin_dir/versions.env" ]; }; do
    virtufin_dir=${virtufin_dir%/*}
  done
  if [ -z "$virtufin_dir" ]; then
    export VIRTUFIN_HOME="@configHome@"
    export VIRTUFIN_STATE_DIR="${VIRTUFIN_STATE_DIR:-${XDG_STATE_HOME:-${HOME:-/tmp}/.local/state}/virtufin}"
  fi
fi
