# OCI images with dockerTools.buildLayeredImage: `<IMAGE_REGISTRY>/<name>:<VIRTUFIN_VERSION>`,
# non-root (65532), PATH=/bin, the catalogue and versions under /share/virtufin.
# Load one with `docker load < result` after `nix build .#<name>-image`.
{
  pkgs,
  lib,
  versions,
  configHome,
}:
{
  name,
  cmd,
  contents,
  ports ? [ ],
  env ? [ ],
}:
let
  config = {
    Cmd = cmd;
    Env = [
      "PATH=/bin"
      "VIRTUFIN_HOME=/share/virtufin"
      "VIRTUFIN_STATE_DIR=/var/lib/virtufin"
      "SSL_CERT_FILE=/etc/ssl/certs/ca-bundle.crt"
      "PYTHONUNBUFFERED=1"
    ]
    ++ env;
    ExposedPorts = builtins.listToAttrs (
      map (port: {
        name = "${toString port}/tcp";
        value = { };
      }) ports
    );
    User = "65532:65532";
    WorkingDir = "/var/lib/virtufin";
    Labels = {
      "org.opencontainers.image.title" = name;
      "org.opencontainers.image.version" = versions.VIRTUFIN_VERSION;
      "org.opencontainers.image.vendor" = "virtufin";
    };
  };
  image = pkgs.dockerTools.buildLayeredImage {
    name = "${versions.IMAGE_REGISTRY}/${name}";
    tag = versions.VIRTUFIN_VERSION;
    contents = contents ++ [
      configHome
      pkgs.dockerTools.caCertificates
      pkgs.dockerTools.usrBinEnv
      pkgs.dockerTools.binSh
    ];
    extraCommands = ''
      mkdir -p tmp var/lib/virtufin etc/virtufin
      chmod 1777 tmp
    '';
    inherit config;
  };
in
image
// {
  # What the evaluation tests (and `nix eval`) read back without building the image.
  virtufinImage = {
    name = "${versions.IMAGE_REGISTRY}/${name}";
    tag = versions.VIRTUFIN_VERSION;
    inherit config;
  };
}
