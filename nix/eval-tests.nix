# The flake's own evaluation tests: a list of failures, empty when the outputs are what
# services.json and versions.env say. `checks.<system>.flake-eval` fails to build unless it
# is empty; `nix eval .#checks.<system>.flake-eval.failures` shows them without building.
{
  lib,
  isLinux,
  services,
  versions,
  packages,
  apps,
  shellPackages,
  tools,
  versionProblems,
}:
let
  expect = ok: message: if ok then [ ] else [ message ];
  registry = versions.IMAGE_REGISTRY;
  tag = versions.VIRTUFIN_VERSION;

  imageChecks =
    attr: name: cmd: ports:
    let
      image = packages.${attr};
    in
    if !(packages ? ${attr}) then
      [ "packages.${attr} is missing" ]
    else
      expect (image.imageName == "${registry}/${name}") "packages.${attr}: image name ${image.imageName}"
      ++ expect (image.imageTag == tag) "packages.${attr}: tag ${image.imageTag} is not VIRTUFIN_VERSION"
      ++ expect (image.virtufinImage.config.Cmd == cmd) "packages.${attr}: Cmd is not ${toString cmd}"
      ++ builtins.concatMap (
        port:
        expect (
          image.virtufinImage.config.ExposedPorts ? "${toString port}/tcp"
        ) "packages.${attr}: port ${toString port} is not exposed"
      ) ports;

  perService =
    svc:
    let
      n = svc.name;
      command = [
        "virtufin"
        "serve"
        n
      ];
      ports = [ svc.grpc.port ] ++ lib.optionals ((svc.healthPort or null) != null) [ svc.healthPort ];
    in
    (
      if !(packages ? ${n}) then
        [ "packages.${n} is missing" ]
      else
        expect (packages.${n}.virtufinCommand == command) "packages.${n} does not run virtufin serve ${n}"
    )
    ++ (
      if !(apps ? ${n}) then
        [ "apps.${n} is missing" ]
      else
        expect (apps.${n}.type == "app") "apps.${n}.type is not app"
        ++ expect (
          (packages ? ${n}) && apps.${n}.program == "${packages.${n}}/bin/virtufin-${n}"
        ) "apps.${n} does not run packages.${n}"
    )
    ++ lib.optionals isLinux (imageChecks "${n}-image" n command ports);

  inShell = drv: what: expect (builtins.elem drv shellPackages) "the dev shell lacks ${what}";
in
builtins.concatMap perService services
++ expect (apps.default.program == "${packages.virtufin-run}/bin/virtufin-run") "apps.default is not virtufin-run"
++ expect (
  packages.virtufin-run.virtufinCommand == [
    "virtufin"
    "run"
  ]
) "apps.default does not run `virtufin run`"
++ expect (packages ? pipelines) "packages.pipelines is missing"
++ expect (packages ? native-workers) "packages.native-workers is missing"
++ lib.optionals isLinux (
  imageChecks "pipelines-image" "pipelines" packages.pipelines.virtufinCommand [ 4000 ]
  ++ imageChecks "nats-streams-image" "nats-streams" [ "virtufin-nats-streams" ] [ ]
)
++ inShell tools.nats-server "nats-server"
++ inShell tools.redis "redis"
++ inShell tools.postgresql "postgresql"
++ inShell tools.uv "uv"
++ inShell tools.gcc "gcc"
++ versionProblems
