//! `manifests/examples/*.yaml` must be valid `IpfsImage`s, as the apiserver would judge them.
//!
//! Two validators stand in for the apiserver: `jsonschema` checks the openAPIV3Schema (types,
//! patterns, bounds, unknown fields), and `kube-cel` evaluates the `x-kubernetes-validations`
//! CEL rules that JSON Schema cannot express (exactly one of `source`/`cid`, ...).

use std::path::PathBuf;

use ipfs_image_api::IpfsImage;
use kube::CustomResourceExt;
use serde_json::{Value, json};

fn examples_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../manifests/examples")
}

/// The CRD's openAPIV3Schema as JSON.
fn crd_schema() -> Value {
    let crd = IpfsImage::crd();
    let schema = crd.spec.versions[0]
        .schema
        .as_ref()
        .unwrap()
        .open_api_v3_schema
        .as_ref();
    serde_json::to_value(schema.unwrap()).unwrap()
}

/// Rewrites a structural schema into plain JSON Schema with the apiserver's semantics:
/// `nullable` becomes a `null` type, a `set` list rejects duplicates, and objects with declared
/// properties reject unknown fields (what `kubectl apply`'s default strict field validation
/// does). Other `x-kubernetes-*` keys are unknown keywords to JSON Schema, which ignores them.
fn to_json_schema(schema: &mut Value) {
    let Value::Object(object) = schema else {
        return;
    };
    if object.remove("nullable") == Some(Value::Bool(true))
        && let Some(Value::String(kind)) = object.get("type").cloned()
    {
        object.insert("type".into(), json!([kind, "null"]));
    }
    if object.contains_key("properties")
        && !object.contains_key("additionalProperties")
        && !object.contains_key("x-kubernetes-preserve-unknown-fields")
    {
        object.insert("additionalProperties".into(), Value::Bool(false));
    }
    if object.get("x-kubernetes-list-type") == Some(&json!("set")) {
        object.insert("uniqueItems".into(), Value::Bool(true));
    }
    for key in ["properties", "items", "additionalProperties"] {
        match object.get_mut(key) {
            Some(Value::Object(children)) if key == "properties" => {
                children.values_mut().for_each(to_json_schema)
            }
            Some(child) => to_json_schema(child),
            None => {}
        }
    }
}

/// Both validators, built once per test.
struct Apiserver {
    schema: jsonschema::Validator,
    cel_schema: Value,
}

impl Apiserver {
    fn new() -> Self {
        let cel_schema = crd_schema();
        let mut schema = cel_schema.clone();
        // Every object has these; the CRD schema leaves them implicit.
        let root = schema["properties"].as_object_mut().unwrap();
        root.insert(
            "apiVersion".into(),
            json!({"type": "string", "enum": ["ipfsimage.dev/v1alpha1"]}),
        );
        root.insert(
            "kind".into(),
            json!({"type": "string", "enum": ["IpfsImage"]}),
        );
        root.insert("metadata".into(), json!({"type": "object"}));
        to_json_schema(&mut schema);
        let schema = jsonschema::options()
            .with_draft(jsonschema::Draft::Draft4)
            .should_validate_formats(true)
            .build(&schema)
            .expect("the CRD schema is a valid JSON schema");
        Self { schema, cel_schema }
    }

    /// Every complaint the apiserver would make about `object` on create.
    fn errors(&self, object: &Value) -> Vec<String> {
        let mut errors: Vec<String> = self
            .schema
            .iter_errors(object)
            .map(|e| format!("{}: {e}", e.instance_path()))
            .collect();
        if let Err(cel) = kube_cel::Validator::new().validate(&self.cel_schema, object, None) {
            errors.extend(cel.into_vec().into_iter().map(|e| format!("CEL: {e}")));
        }
        errors
    }
}

fn nginx() -> Value {
    json!({
        "apiVersion": "ipfsimage.dev/v1alpha1",
        "kind": "IpfsImage",
        "metadata": {"name": "nginx", "namespace": "default"},
        "spec": {"source": "docker.io/library/nginx:1.25"}
    })
}

const CID: &str = "bafkreib7j7kyn32cn2h4gpiqr2ucqdpdhzop7s2yzzrueh4xhmgovnpyoi";

/// `nginx()` with `spec` fields replaced (a `null` removes the field).
fn with_spec(changes: Value) -> Value {
    let mut object = nginx();
    let spec = object["spec"].as_object_mut().unwrap();
    for (key, value) in changes.as_object().unwrap() {
        if value.is_null() {
            spec.remove(key);
        } else {
            spec.insert(key.clone(), value.clone());
        }
    }
    object
}

fn assert_rejected(object: Value, expected: &str) {
    let errors = Apiserver::new().errors(&object);
    assert!(
        errors.iter().any(|e| e.contains(expected)),
        "expected an error mentioning {expected:?} for {object}, got {errors:#?}"
    );
}

#[test]
fn every_example_is_a_valid_ipfsimage() {
    let apiserver = Apiserver::new();
    let mut checked = vec![];
    for entry in std::fs::read_dir(examples_dir()).expect("manifests/examples exists") {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "yaml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let object: Value = serde_saphyr::from_str(&text)
            .unwrap_or_else(|e| panic!("{}: not YAML: {e}", path.display()));
        let typed: IpfsImage = serde_json::from_value(object.clone())
            .unwrap_or_else(|e| panic!("{}: not an IpfsImage: {e}", path.display()));
        assert!(typed.spec.origin().is_some(), "{}", path.display());
        let errors = apiserver.errors(&object);
        assert!(errors.is_empty(), "{}: {errors:#?}", path.display());
        checked.push(path.file_name().unwrap().to_string_lossy().into_owned());
    }
    checked.sort();
    assert_eq!(
        checked,
        [
            "ipfsimage-adopt-cid.yaml",
            "ipfsimage-prefetch.yaml",
            "ipfsimage.yaml"
        ]
    );
}

#[test]
fn prefetch_example_sets_every_field_it_shows() {
    let text = std::fs::read_to_string(examples_dir().join("ipfsimage-prefetch.yaml")).unwrap();
    let image: IpfsImage = serde_saphyr::from_str(&text).unwrap();
    assert_eq!(image.spec.platforms, ["linux/amd64"]);
    assert_eq!(
        image.spec.pull_secret_names().collect::<Vec<_>>(),
        ["regcred"]
    );
    assert_eq!(image.spec.min_replicas, Some(2));
    let selector = &image.spec.prefetch.unwrap().node_selector;
    assert_eq!(
        selector.get("kubernetes.io/os").map(String::as_str),
        Some("linux")
    );
}

#[test]
fn the_baseline_object_is_accepted() {
    assert_eq!(Apiserver::new().errors(&nginx()), Vec::<String>::new());
    let adopt = with_spec(json!({"source": null, "cid": CID}));
    assert_eq!(Apiserver::new().errors(&adopt), Vec::<String>::new());
    let v0 =
        with_spec(json!({"source": null, "cid": "QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG"}));
    assert_eq!(Apiserver::new().errors(&v0), Vec::<String>::new());
}

#[test]
fn source_and_cid_together_are_rejected() {
    assert_rejected(
        with_spec(json!({"cid": CID})),
        "exactly one of spec.source or spec.cid",
    );
}

#[test]
fn neither_source_nor_cid_is_rejected() {
    assert_rejected(
        with_spec(json!({"source": null})),
        "exactly one of spec.source or spec.cid",
    );
}

#[test]
fn a_malformed_cid_is_rejected() {
    for bad in [
        "bafyTOOSHORT",
        "Qm123",
        "zdj7WWeQ43G6JJvLWQWZpyHuAMq6uYWRjkBXFad11vE2LHhQ7",
        "BAFY",
    ] {
        assert_rejected(with_spec(json!({"source": null, "cid": bad})), "/spec/cid");
    }
}

#[test]
fn a_malformed_platform_is_rejected() {
    for bad in [
        "amd64",
        "linux/amd64/v8/extra",
        "Linux/AMD64",
        "linux/ amd64",
    ] {
        assert_rejected(with_spec(json!({"platforms": [bad]})), "/spec/platforms/0");
    }
}

#[test]
fn duplicate_platforms_are_rejected() {
    let twice = with_spec(json!({"platforms": ["linux/amd64", "linux/amd64"]}));
    assert_rejected(twice, "/spec/platforms");
}

#[test]
fn negative_min_replicas_is_rejected() {
    assert_rejected(with_spec(json!({"minReplicas": -1})), "/spec/minReplicas");
}

#[test]
fn unknown_fields_are_rejected() {
    assert_rejected(
        with_spec(json!({"imagePullSecret": [{"name": "x"}]})),
        "imagePullSecret",
    );
}

#[test]
fn pull_secret_names_must_be_object_names() {
    assert_rejected(
        with_spec(json!({"imagePullSecrets": [{"name": "Reg Cred"}]})),
        "/spec/imagePullSecrets/0/name",
    );
    assert_rejected(
        with_spec(json!({"imagePullSecrets": [{}]})),
        "/spec/imagePullSecrets/0",
    );
}

#[test]
fn recheck_interval_must_be_a_duration_of_at_least_a_minute() {
    assert_rejected(
        with_spec(json!({"recheckInterval": "10"})),
        "/spec/recheckInterval",
    );
    assert_rejected(with_spec(json!({"recheckInterval": "30s"})), "at least 1m");
    for good in ["0s", "1m", "90s", "1h30m"] {
        let errors = Apiserver::new().errors(&with_spec(json!({"recheckInterval": good})));
        assert!(errors.is_empty(), "{good}: {errors:#?}");
    }
}

#[test]
fn platforms_and_estargz_are_rejected_for_an_adopted_cid() {
    let adopt = |changes: Value| {
        let mut object = with_spec(json!({"source": null, "cid": CID}));
        for (key, value) in changes.as_object().unwrap() {
            object["spec"][key] = value.clone();
        }
        object
    };
    assert_rejected(
        adopt(json!({"platforms": ["linux/amd64"]})),
        "apply to spec.source only",
    );
    assert_rejected(adopt(json!({"estargz": true})), "apply to spec.source only");
}

#[test]
fn an_empty_source_is_rejected() {
    assert_rejected(with_spec(json!({"source": ""})), "/spec/source");
    assert_rejected(with_spec(json!({"source": "nginx 1.25"})), "/spec/source");
}

#[test]
fn every_cel_rule_compiles() {
    let compiled = kube_cel::compile_schema(&crd_schema());
    assert!(
        !compiled.has_errors(),
        "{:#?}",
        compiled.compilation_errors()
    );
}
