# STAND-IN for uv2nix's `lib.workspace.loadWorkspace { workspaceRoot }`: reads the real
# uv.lock and pyproject.toml, so the package set holds the locked names and versions. A name
# uv.lock locks twice (environment markers) keeps its first entry.
{ workspaceRoot }:
let
  inherit (builtins)
    attrNames
    elem
    foldl'
    fromTOML
    listToAttrs
    mapAttrs
    readFile
    ;
  lock = fromTOML (readFile (workspaceRoot + "/uv.lock"));
  pyproject = fromTOML (readFile (workspaceRoot + "/pyproject.toml"));
  project = pyproject.project.name;
  groups = attrNames (pyproject.dependency-groups or { });
  extras = attrNames (pyproject.project.optional-dependencies or { });
  locked = foldl' (acc: p: if acc ? ${p.name} then acc else acc // { ${p.name} = p; }) { } lock.package;
in
{
  mkPyprojectOverlay =
    { sourcePreference }:
    assert elem sourcePreference [
      "wheel"
      "sdist"
    ];
    final: prev:
    mapAttrs (
      name: p:
      final.mkStandinPythonPackage {
        pname = name;
        inherit (p) version;
        dependencies = map (d: d.name) (p.dependencies or [ ]);
      }
    ) locked;
  mkEditablePyprojectOverlay =
    {
      root,
      members ? [ project ],
    }:
    final: prev:
    listToAttrs (
      map (name: {
        inherit name;
        value = prev.${name}.overrideAttrs (old: {
          editableRoot = root;
        });
      }) members
    );
  deps = {
    default = {
      ${project} = [ ];
    };
    all = {
      ${project} = extras ++ groups;
    };
  };
}
