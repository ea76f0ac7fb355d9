# Command wrappers around the Python environment: `virtufin-<service>` runs
# `virtufin serve <service>`, `virtufin-run` runs the main job, `virtufin-pipelines` serves
# the Dagster code location. Outside a checkout they use the catalogue they were built with.
{
  pkgs,
  lib,
  venv,
  configHome,
}:
{
  name,
  command,
}:
let
  findProject = builtins.replaceStrings [ "@configHome@" ] [ "${configHome}/share/virtufin" ] (
    builtins.readFile ./find-project.sh
  );
  program = "${venv}/bin/${builtins.head command}";
  args = lib.escapeShellArgs (builtins.tail command);
in
pkgs.writeShellApplication {
  inherit name;
  runtimeInputs = [ venv ];
  text = findProject + ''
    exec ${program} ${args} "$@"
  '';
}
// {
  # The command as a user would type it; the evaluation tests compare it with services.json.
  virtufinCommand = command;
}
