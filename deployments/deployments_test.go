package deployments

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"go/ast"
	"go/parser"
	"go/token"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
)

// Paths are relative to this package's directory, where `go test` runs.
const (
	configGo    = "../shared/config/config.go"
	composeFile = "../docker-compose.yml"
	envExample  = "../.env.example"
	dockerfile  = "Dockerfile"
	k8sDir      = "kubernetes"
	dashboard   = "grafana/ozmap-sytex-sync.json"
	alertsFile  = "prometheus/alerts.yaml"
)

// extraVars are read by the programs outside shared/config (the telemetry
// HTTP server), with their defaults.
var extraVars = map[string]string{"HTTP_ADDR": ":8080"}

// metricContract is every Prometheus metric the programs export, with its
// type: dashboards and alerts may use nothing else.
var metricContract = map[string]string{
	"ozmap_sync_boxes_published_total":          "counter",
	"ozmap_sync_last_success_timestamp_seconds": "gauge",
	"ozmap_sync_last_run_duration_seconds":      "gauge",
	"ozmap_sync_upserts_total":                  "counter",
	"ozmap_sync_dead_letters_total":             "counter",
	"ozmap_sync_sytex_request_duration_seconds": "histogram",
	"ozmap_sync_ozmap_request_duration_seconds": "histogram",
	"ozmap_sync_breaker_state":                  "gauge",
	"ozmap_sync_boxes_held":                     "gauge",
	"ozmap_sync_consumer_pending":               "gauge",
	"ozmap_sync_dlq_messages":                   "gauge",
}

// programStructs maps each program binary to its configuration struct in
// shared/config.
var programStructs = map[string]string{"/producer": "Producer", "/consumer": "Consumer"}

// envVar is one `env:"..."` tag of shared/config.
type envVar struct {
	Name     string
	Required bool
	Default  string
}

// contract is what the programs read: every variable, and per program binary
// the variables it requires.
type contract struct {
	vars     map[string]envVar
	required map[string][]string // "/producer" → required names
}

func loadContract(t *testing.T) contract {
	t.Helper()
	fset := token.NewFileSet()
	f, err := parser.ParseFile(fset, configGo, nil, parser.SkipObjectResolution)
	if err != nil {
		t.Fatalf("parse %s: %v", configGo, err)
	}
	structs := map[string]*ast.StructType{}
	ast.Inspect(f, func(n ast.Node) bool {
		if ts, ok := n.(*ast.TypeSpec); ok {
			if st, ok := ts.Type.(*ast.StructType); ok {
				structs[ts.Name.Name] = st
			}
		}
		return true
	})
	var walk func(typeName string, seen map[string]bool) ([]envVar, error)
	walk = func(typeName string, seen map[string]bool) ([]envVar, error) {
		st, ok := structs[typeName]
		if !ok {
			return nil, errors.New("no struct type " + typeName + " in " + configGo)
		}
		if seen[typeName] {
			return nil, nil
		}
		seen[typeName] = true
		var out []envVar
		for _, field := range st.Fields.List {
			var tag string
			if field.Tag != nil {
				raw, err := strconv.Unquote(field.Tag.Value)
				if err != nil {
					return nil, err
				}
				tag = reflect.StructTag(raw).Get("env")
			}
			if tag == "" {
				// A nested settings struct (NATS, Log) without a tag of its own.
				if id, ok := field.Type.(*ast.Ident); ok && structs[id.Name] != nil {
					nested, err := walk(id.Name, seen)
					if err != nil {
						return nil, err
					}
					out = append(out, nested...)
				}
				continue
			}
			if tag == "-" {
				continue
			}
			out = append(out, parseEnvTag(tag))
		}
		return out, nil
	}
	c := contract{vars: map[string]envVar{}, required: map[string][]string{}}
	for name, def := range extraVars {
		c.vars[name] = envVar{Name: name, Default: def}
	}
	for bin, typeName := range programStructs {
		vars, err := walk(typeName, map[string]bool{})
		if err != nil {
			t.Fatal(err)
		}
		if len(vars) == 0 {
			t.Fatalf("%s: struct %s has no env tags", configGo, typeName)
		}
		for _, v := range vars {
			c.vars[v.Name] = v
			if v.Required {
				c.required[bin] = append(c.required[bin], v.Name)
			}
		}
	}
	return c
}

// parseEnvTag reads go-envconfig's `NAME, required` / `NAME, default=VALUE`
// (everything after "default=" is the value, commas included).
func parseEnvTag(tag string) envVar {
	name, opts, _ := strings.Cut(tag, ",")
	v := envVar{Name: strings.TrimSpace(name)}
	for opts != "" {
		var opt string
		opt, opts, _ = strings.Cut(opts, ",")
		opt = strings.TrimLeft(opt, " ")
		if strings.HasPrefix(opt, "default=") {
			v.Default = strings.TrimPrefix(opt, "default=")
			if opts != "" {
				v.Default += "," + opts
			}
			break
		}
		if strings.TrimSpace(opt) == "required" {
			v.Required = true
		}
	}
	return v
}

func TestContractParsed(t *testing.T) {
	c := loadContract(t)
	// A sanity floor: if these are not found, the parser is wrong, and every
	// other test would pass vacuously.
	for bin, want := range map[string][]string{
		"/producer": {"OZMAP_URL", "OZMAP_API_KEY"},
		"/consumer": {"SYTEX_URL", "SYTEX_TOKEN", "SYTEX_ORGANIZATION_ID"},
	} {
		for _, name := range want {
			if !slices.Contains(c.required[bin], name) {
				t.Errorf("%s: %s not found as required for %s (found %v)", configGo, name, bin, c.required[bin])
			}
		}
	}
	for _, name := range []string{"NATS_URL", "LOG_LEVEL", "CONSUMER_SHUTDOWN_TIMEOUT", "SYNC_SCHEDULE"} {
		if _, ok := c.vars[name]; !ok {
			t.Errorf("%s: %s not found", configGo, name)
		}
	}
}

// ---------------------------------------------------------------------------
// .env.example

// envFile is a parsed KEY=VALUE file: set keys, and keys documented as
// commented-out defaults ("# KEY=VALUE").
type envFile struct {
	set        map[string]string
	documented map[string]string
}

var (
	envLineRe      = regexp.MustCompile(`^([A-Za-z_][A-Za-z0-9_]*)=(.*)$`)
	envCommentedRe = regexp.MustCompile(`^#\s?([A-Z][A-Z0-9_]*)=(.*)$`)
)

func readEnvFile(t *testing.T, path string) envFile {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	ef := envFile{set: map[string]string{}, documented: map[string]string{}}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "":
		case strings.HasPrefix(line, "#"):
			if m := envCommentedRe.FindStringSubmatch(line); m != nil {
				ef.documented[m[1]] = m[2]
			}
		default:
			m := envLineRe.FindStringSubmatch(strings.TrimPrefix(line, "export "))
			if m == nil {
				t.Errorf("%s:%d: not KEY=VALUE: %q", path, n, line)
				continue
			}
			if _, dup := ef.set[m[1]]; dup {
				t.Errorf("%s:%d: %s set twice", path, n, m[1])
			}
			ef.set[m[1]] = m[2]
		}
	}
	return ef
}

func TestEnvExample(t *testing.T) {
	c := loadContract(t)
	ef := readEnvFile(t, envExample)
	for name := range ef.set {
		if _, ok := c.vars[name]; !ok {
			t.Errorf("%s sets %s, which the programs do not read", envExample, name)
		}
		if _, ok := ef.documented[name]; ok {
			t.Errorf("%s: %s is both set and commented out", envExample, name)
		}
	}
	for name, val := range ef.documented {
		v, ok := c.vars[name]
		if !ok {
			t.Errorf("%s documents %s, which the programs do not read", envExample, name)
			continue
		}
		if v.Required {
			t.Errorf("%s: %s is required; it must be set (uncommented), not documented as a default", envExample, name)
		}
		if v.Default != "" && val != v.Default {
			t.Errorf("%s documents %s=%s, but the default in %s is %q", envExample, name, val, configGo, v.Default)
		}
	}
	// It is the reference list of settings: every variable appears.
	for name := range c.vars {
		_, set := ef.set[name]
		_, doc := ef.documented[name]
		if !set && !doc {
			t.Errorf("%s does not mention %s", envExample, name)
		}
	}
}

// ---------------------------------------------------------------------------
// Dockerfile

type dockerStage struct {
	from       string
	copies     []string // destination paths of COPY --from=...
	user       string
	entrypoint string
	cmd        string
	exposes    []string
	lines      []string
}

// readDockerfile splits the Dockerfile into stages, joining continued lines.
func readDockerfile(t *testing.T) []dockerStage {
	t.Helper()
	data, err := os.ReadFile(dockerfile)
	if err != nil {
		t.Fatal(err)
	}
	var (
		stages []dockerStage
		buf    string
	)
	for _, raw := range strings.Split(string(data), "\n") {
		line := strings.TrimSpace(raw)
		if buf == "" && (line == "" || strings.HasPrefix(line, "#")) {
			continue
		}
		if strings.HasSuffix(line, `\`) {
			buf += strings.TrimSuffix(line, `\`) + " "
			continue
		}
		line, buf = buf+line, ""
		fields := strings.Fields(line)
		instr := strings.ToUpper(fields[0])
		if instr == "FROM" {
			stages = append(stages, dockerStage{from: strings.Join(fields[1:], " ")})
		}
		if len(stages) == 0 {
			t.Fatalf("%s: %q before the first FROM", dockerfile, line)
		}
		s := &stages[len(stages)-1]
		s.lines = append(s.lines, line)
		rest := strings.TrimSpace(line[len(fields[0]):])
		switch instr {
		case "COPY":
			if strings.HasPrefix(rest, "--from=") && len(fields) >= 3 {
				s.copies = append(s.copies, fields[len(fields)-1])
			}
		case "USER":
			s.user = rest
		case "ENTRYPOINT":
			s.entrypoint = rest
		case "CMD":
			s.cmd = rest
		case "EXPOSE":
			s.exposes = append(s.exposes, fields[1:]...)
		}
	}
	if len(stages) < 2 {
		t.Fatalf("%s: want a multi-stage build, found %d stage(s)", dockerfile, len(stages))
	}
	return stages
}

// imageBinaries is the set of programs the image contains.
func imageBinaries(t *testing.T) map[string]bool {
	t.Helper()
	final := readDockerfile(t)
	bins := map[string]bool{}
	for _, dst := range final[len(final)-1].copies {
		if _, ok := programStructs[dst]; ok {
			bins[dst] = true
		}
	}
	return bins
}

func TestDockerfile(t *testing.T) {
	stages := readDockerfile(t)
	final := stages[len(stages)-1]
	build := strings.Join(stages[0].lines, "\n")
	for _, want := range []string{"CGO_ENABLED=0", "-trimpath", `-ldflags="-s -w"`, "go mod download", "./producer", "./consumer"} {
		if !strings.Contains(build, want) {
			t.Errorf("%s: build stage lacks %s", dockerfile, want)
		}
	}
	if i, j := strings.Index(build, "go mod download"), strings.Index(build, "COPY . ."); i < 0 || j < 0 || i > j {
		t.Errorf("%s: `go mod download` must run before `COPY . .` so its layer is cached", dockerfile)
	}

	base := strings.Fields(final.from)[0]
	if base != "scratch" && !strings.Contains(base, "distroless/static") {
		t.Errorf("%s: final stage is %q; want scratch or distroless static", dockerfile, base)
	}
	for bin := range programStructs {
		if !slices.Contains(final.copies, bin) {
			t.Errorf("%s: final stage does not COPY --from=... %s", dockerfile, bin)
		}
	}
	if !slices.ContainsFunc(final.copies, func(p string) bool { return strings.Contains(p, "ca-certificates") }) {
		t.Errorf("%s: final stage does not copy the CA certificates", dockerfile)
	}

	// Non-root: a numeric, non-zero uid (a name cannot be checked against
	// runAsNonRoot by the kubelet, and scratch has no /etc/passwd).
	uid, _, _ := strings.Cut(final.user, ":")
	if n, err := strconv.Atoi(uid); err != nil || n == 0 {
		t.Errorf("%s: final stage USER is %q; want a numeric non-zero uid such as 65532:65532", dockerfile, final.user)
	}

	// compose's `command` replaces CMD but not ENTRYPOINT: with an ENTRYPOINT,
	// `command: ["/producer"]` would become an argument of that entrypoint.
	if final.entrypoint != "" {
		t.Errorf("%s: final stage sets ENTRYPOINT %s; leave it unset so compose/k8s `command` picks the program", dockerfile, final.entrypoint)
	}
	if final.cmd != "" && !cmdNamesProgram(final.cmd) {
		t.Errorf("%s: CMD %s does not name /producer or /consumer", dockerfile, final.cmd)
	}
	_, port, _ := strings.Cut(extraVars["HTTP_ADDR"], ":")
	if !slices.Contains(final.exposes, port) {
		t.Errorf("%s: EXPOSE %v does not include the HTTP_ADDR port %s", dockerfile, final.exposes, port)
	}
}

func cmdNamesProgram(cmd string) bool {
	var argv []string
	if err := json.Unmarshal([]byte(cmd), &argv); err != nil || len(argv) == 0 {
		return false
	}
	_, ok := programStructs[argv[0]]
	return ok
}

// ---------------------------------------------------------------------------
// docker-compose.yml

type composeService struct {
	Image       string `yaml:"image"`
	Build       any    `yaml:"build"`
	Command     any    `yaml:"command"`
	EnvFile     any    `yaml:"env_file"`
	Environment any    `yaml:"environment"`
	Healthcheck *struct {
		Test any `yaml:"test"`
	} `yaml:"healthcheck"`
	StopGracePeriod string `yaml:"stop_grace_period"`
}

// stringList accepts compose's "string or list of strings".
func stringList(v any) []string {
	switch v := v.(type) {
	case nil:
		return nil
	case string:
		return strings.Fields(v)
	case []any:
		out := make([]string, 0, len(v))
		for _, e := range v {
			switch e := e.(type) {
			case string:
				out = append(out, e)
			case map[string]any: // env_file: [{path: .env, required: false}]
				if p, ok := e["path"].(string); ok {
					out = append(out, p)
				}
			}
		}
		return out
	}
	return nil
}

// environmentKeys accepts compose's map or ["KEY=VALUE"] list.
func environmentKeys(v any) map[string]string {
	out := map[string]string{}
	switch v := v.(type) {
	case map[string]any:
		for k, val := range v {
			out[k] = strings.TrimSpace(strings.Trim(yamlScalar(val), `"`))
		}
	case []any:
		for _, e := range v {
			if s, ok := e.(string); ok {
				k, val, _ := strings.Cut(s, "=")
				out[k] = val
			}
		}
	}
	return out
}

func yamlScalar(v any) string {
	if v == nil {
		return ""
	}
	if s, ok := v.(string); ok {
		return s
	}
	b, _ := json.Marshal(v)
	return string(b)
}

func TestCompose(t *testing.T) {
	c := loadContract(t)
	bins := imageBinaries(t)
	data, err := os.ReadFile(composeFile)
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Services map[string]composeService `yaml:"services"`
	}
	if err := yaml.Unmarshal(data, &doc); err != nil {
		t.Fatalf("%s: %v", composeFile, err)
	}
	programs := map[string]int{}
	for name, svc := range doc.Services {
		if svc.Build == nil {
			continue // third-party image (nats)
		}
		cmd := stringList(svc.Command)
		if len(cmd) == 0 {
			t.Errorf("%s: service %s builds our image but has no command; name /producer or /consumer", composeFile, name)
			continue
		}
		bin := cmd[0]
		if !bins[bin] {
			t.Errorf("%s: service %s runs %q, which the Dockerfile does not copy (have %v)", composeFile, name, bin, keys(bins))
			continue
		}
		programs[bin]++

		if svc.Healthcheck == nil {
			t.Errorf("%s: service %s has no healthcheck", composeFile, name)
		} else if hc := stringList(svc.Healthcheck.Test); len(hc) < 3 || hc[0] != "CMD" || hc[1] != bin || hc[2] != "-healthcheck" {
			t.Errorf("%s: service %s healthcheck is %q; want [CMD %s -healthcheck]", composeFile, name, hc, bin)
		}

		env := environmentKeys(svc.Environment)
		for k := range env {
			if _, ok := c.vars[k]; !ok {
				t.Errorf("%s: service %s sets %s, which the programs do not read", composeFile, name, k)
			}
		}
		for _, f := range stringList(svc.EnvFile) {
			path := filepath.Join("..", f)
			if f == ".env" {
				// .env is the operator's copy of .env.example (git-ignored).
				path = envExample
			}
			for k, v := range readEnvFile(t, path).set {
				if _, ok := env[k]; !ok {
					env[k] = v
				}
			}
		}
		for _, req := range c.required[bin] {
			if _, ok := env[req]; !ok {
				t.Errorf("%s: service %s (%s) does not get required %s (environment or env_file)", composeFile, name, bin, req)
			}
		}
		if bin == "/consumer" {
			checkGrace(t, composeFile+": service "+name, svc.StopGracePeriod, env, c)
		}
	}
	for bin := range programStructs {
		if programs[bin] == 0 {
			t.Errorf("%s: no service runs %s", composeFile, bin)
		}
	}
}

// checkGrace checks that the orchestrator waits longer than the consumer's
// own shutdown timeout before killing it.
func checkGrace(t *testing.T, where, grace string, env map[string]string, c contract) {
	t.Helper()
	shutdown := c.vars["CONSUMER_SHUTDOWN_TIMEOUT"].Default
	if v, ok := env["CONSUMER_SHUTDOWN_TIMEOUT"]; ok {
		shutdown = v
	}
	sd, err := time.ParseDuration(shutdown)
	if err != nil {
		t.Errorf("%s: CONSUMER_SHUTDOWN_TIMEOUT %q: %v", where, shutdown, err)
		return
	}
	g, err := time.ParseDuration(grace)
	if err != nil {
		t.Errorf("%s: grace period %q: %v", where, grace, err)
		return
	}
	if g <= sd {
		t.Errorf("%s: grace period %s is not longer than CONSUMER_SHUTDOWN_TIMEOUT %s", where, g, sd)
	}
}

// ---------------------------------------------------------------------------
// Kubernetes

type k8sMeta struct {
	APIVersion string `yaml:"apiVersion"`
	Kind       string `yaml:"kind"`
	Metadata   struct {
		Name      string `yaml:"name"`
		Namespace string `yaml:"namespace"`
	} `yaml:"metadata"`
}

type k8sDoc struct {
	k8sMeta
	file string
	node *yaml.Node
}

type probe struct {
	HTTPGet *struct {
		Path string `yaml:"path"`
		Port any    `yaml:"port"`
	} `yaml:"httpGet"`
}

type container struct {
	Name    string   `yaml:"name"`
	Image   string   `yaml:"image"`
	Command []string `yaml:"command"`
	Args    []string `yaml:"args"`
	Env     []struct {
		Name      string `yaml:"name"`
		Value     string `yaml:"value"`
		ValueFrom any    `yaml:"valueFrom"`
	} `yaml:"env"`
	EnvFrom []struct {
		Prefix       string `yaml:"prefix"`
		ConfigMapRef *struct {
			Name string `yaml:"name"`
		} `yaml:"configMapRef"`
		SecretRef *struct {
			Name string `yaml:"name"`
		} `yaml:"secretRef"`
	} `yaml:"envFrom"`
	Ports []struct {
		Name          string `yaml:"name"`
		ContainerPort int    `yaml:"containerPort"`
	} `yaml:"ports"`
	LivenessProbe   *probe `yaml:"livenessProbe"`
	ReadinessProbe  *probe `yaml:"readinessProbe"`
	SecurityContext *struct {
		RunAsNonRoot             *bool  `yaml:"runAsNonRoot"`
		RunAsUser                *int64 `yaml:"runAsUser"`
		ReadOnlyRootFilesystem   *bool  `yaml:"readOnlyRootFilesystem"`
		AllowPrivilegeEscalation *bool  `yaml:"allowPrivilegeEscalation"`
	} `yaml:"securityContext"`
}

type deployment struct {
	Spec struct {
		Replicas *int `yaml:"replicas"`
		Template struct {
			Spec struct {
				TerminationGracePeriodSeconds *int `yaml:"terminationGracePeriodSeconds"`
				SecurityContext               *struct {
					RunAsNonRoot *bool  `yaml:"runAsNonRoot"`
					RunAsUser    *int64 `yaml:"runAsUser"`
				} `yaml:"securityContext"`
				Containers     []container `yaml:"containers"`
				InitContainers []container `yaml:"initContainers"`
			} `yaml:"spec"`
		} `yaml:"template"`
	} `yaml:"spec"`
}

// readK8s decodes every YAML document of every manifest in kubernetes/.
// nats-values.yaml holds Helm values, not objects, and is returned apart.
func readK8s(t *testing.T) (docs []k8sDoc, helmValues map[string]*yaml.Node) {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(k8sDir, "*.y*ml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no manifests in %s: %v", k8sDir, err)
	}
	helmValues = map[string]*yaml.Node{}
	for _, file := range files {
		f, err := os.Open(file)
		if err != nil {
			t.Fatal(err)
		}
		dec := yaml.NewDecoder(f)
		for i := 0; ; i++ {
			var n yaml.Node
			err := dec.Decode(&n)
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatalf("%s: document %d: %v", file, i, err)
			}
			if len(n.Content) == 0 {
				continue // empty document between ---
			}
			var m k8sMeta
			if err := n.Decode(&m); err != nil {
				t.Fatalf("%s: document %d: %v", file, i, err)
			}
			if m.Kind == "" {
				if strings.HasSuffix(file, "-values.yaml") {
					helmValues[file] = &n
					continue
				}
				t.Errorf("%s: document %d has no kind", file, i)
				continue
			}
			if m.APIVersion == "" || m.Metadata.Name == "" {
				t.Errorf("%s: %s document %d lacks apiVersion or metadata.name", file, m.Kind, i)
			}
			if m.Metadata.Namespace != "" {
				t.Errorf("%s: %s/%s pins namespace %q; keep manifests namespace-agnostic", file, m.Kind, m.Metadata.Name, m.Metadata.Namespace)
			}
			docs = append(docs, k8sDoc{k8sMeta: m, file: file, node: &n})
		}
		f.Close()
	}
	return docs, helmValues
}

func decode(t *testing.T, d k8sDoc, v any) {
	t.Helper()
	if err := d.node.Decode(v); err != nil {
		t.Fatalf("%s: %s/%s: %v", d.file, d.Kind, d.Metadata.Name, err)
	}
}

func TestKubernetes(t *testing.T) {
	c := loadContract(t)
	bins := imageBinaries(t)
	docs, helmValues := readK8s(t)

	// Variables carried by ConfigMaps and Secrets, by kind/name.
	sources := map[string]map[string]string{}
	for _, d := range docs {
		var obj struct {
			Data       map[string]string `yaml:"data"`
			StringData map[string]string `yaml:"stringData"`
		}
		switch d.Kind {
		case "ConfigMap", "Secret":
			decode(t, d, &obj)
		default:
			continue
		}
		vars := map[string]string{}
		for k, v := range obj.Data {
			vars[k] = v
		}
		for k, v := range obj.StringData {
			vars[k] = v
		}
		for k, v := range vars {
			if _, ok := c.vars[k]; !ok {
				t.Errorf("%s: %s/%s sets %s, which the programs do not read", d.file, d.Kind, d.Metadata.Name, k)
			}
			if v == "" {
				// go-envconfig treats an empty value as set: it would
				// override the default, or satisfy `required` with nothing.
				t.Errorf("%s: %s/%s sets %s to an empty string", d.file, d.Kind, d.Metadata.Name, k)
			}
		}
		sources[d.Kind+"/"+d.Metadata.Name] = vars
	}

	consumers := map[string]bool{} // Deployment names running /consumer
	programs := map[string]int{}
	for _, d := range docs {
		if d.Kind != "Deployment" {
			continue
		}
		var dep deployment
		decode(t, d, &dep)
		where := d.file + ": Deployment/" + d.Metadata.Name
		pod := dep.Spec.Template.Spec
		if len(pod.Containers) == 0 {
			t.Errorf("%s: no containers", where)
		}
		for _, ctr := range append(pod.InitContainers, pod.Containers...) {
			cwhere := where + " container " + ctr.Name
			argv := ctr.Command
			if len(argv) == 0 {
				argv = ctr.Args // no ENTRYPOINT in the image: args replace CMD
			}
			if len(argv) == 0 || !bins[argv[0]] {
				t.Errorf("%s: command %q does not start with a binary the Dockerfile copies (%v)", cwhere, argv, keys(bins))
				continue
			}
			bin := argv[0]
			programs[bin]++
			if bin == "/consumer" {
				consumers[d.Metadata.Name] = true
			}

			env := map[string]string{}
			for _, ef := range ctr.EnvFrom {
				var ref string
				switch {
				case ef.ConfigMapRef != nil:
					ref = "ConfigMap/" + ef.ConfigMapRef.Name
				case ef.SecretRef != nil:
					ref = "Secret/" + ef.SecretRef.Name
				}
				vars, ok := sources[ref]
				if !ok {
					t.Errorf("%s: envFrom %s is not defined in %s", cwhere, ref, k8sDir)
				}
				for k, v := range vars {
					env[ef.Prefix+k] = v
				}
			}
			for _, e := range ctr.Env {
				if _, ok := c.vars[e.Name]; !ok {
					t.Errorf("%s: env %s is not read by the programs", cwhere, e.Name)
				}
				env[e.Name] = e.Value
			}
			for _, req := range c.required[bin] {
				if _, ok := env[req]; !ok {
					t.Errorf("%s (%s): required %s is not provided (env or envFrom)", cwhere, bin, req)
				}
			}
			for k, want := range map[string]string{"NATS_URL": "nats://nats.nats.svc:4222", "NATS_STREAM_REPLICAS": "3"} {
				if env[k] != want {
					t.Errorf("%s: %s is %q, want %q", cwhere, k, env[k], want)
				}
			}

			port := c.vars["HTTP_ADDR"].Default
			if v, ok := env["HTTP_ADDR"]; ok {
				port = v
			}
			_, port, _ = strings.Cut(port, ":")
			checkProbe(t, cwhere+" livenessProbe", ctr.LivenessProbe, "/healthz", port, ctr)
			checkProbe(t, cwhere+" readinessProbe", ctr.ReadinessProbe, "/readyz", port, ctr)

			sc := ctr.SecurityContext
			if sc == nil || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
				t.Errorf("%s: securityContext.readOnlyRootFilesystem is not true", cwhere)
			}
			if sc == nil || sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
				t.Errorf("%s: securityContext.allowPrivilegeEscalation is not false", cwhere)
			}
			nonRoot := pod.SecurityContext != nil && pod.SecurityContext.RunAsNonRoot != nil && *pod.SecurityContext.RunAsNonRoot
			if sc != nil && sc.RunAsNonRoot != nil {
				nonRoot = *sc.RunAsNonRoot
			}
			if !nonRoot {
				t.Errorf("%s: runAsNonRoot is not true (pod or container securityContext)", cwhere)
			}
			for _, uid := range []*int64{podUID(pod.SecurityContext), containerUID(sc)} {
				if uid != nil && *uid == 0 {
					t.Errorf("%s: runAsUser 0", cwhere)
				}
			}
			if bin == "/consumer" {
				grace := 30 // the Kubernetes default
				if pod.TerminationGracePeriodSeconds != nil {
					grace = *pod.TerminationGracePeriodSeconds
				}
				checkGrace(t, cwhere, strconv.Itoa(grace)+"s", env, c)
			}
		}
	}
	for bin := range programStructs {
		if programs[bin] == 0 {
			t.Errorf("%s: no Deployment runs %s", k8sDir, bin)
		}
	}

	// The autoscalers must target the consumer Deployment.
	for _, d := range docs {
		var obj struct {
			Spec struct {
				ScaleTargetRef struct {
					Kind string `yaml:"kind"`
					Name string `yaml:"name"`
				} `yaml:"scaleTargetRef"`
				Triggers []struct {
					Type     string            `yaml:"type"`
					Metadata map[string]string `yaml:"metadata"`
				} `yaml:"triggers"`
			} `yaml:"spec"`
		}
		switch d.Kind {
		case "ScaledObject", "HorizontalPodAutoscaler":
			decode(t, d, &obj)
		default:
			continue
		}
		ref := obj.Spec.ScaleTargetRef
		if !consumers[ref.Name] || (ref.Kind != "" && ref.Kind != "Deployment") {
			t.Errorf("%s: %s/%s scales %s %q, not the consumer Deployment (%v)", d.file, d.Kind, d.Metadata.Name, ref.Kind, ref.Name, keys(consumers))
		}
		for _, trg := range obj.Spec.Triggers {
			if trg.Type != "nats-jetstream" {
				continue
			}
			for k, want := range map[string]string{"stream": "OZMAP_BOXES", "consumer": "sytex-upsert", "account": "$G"} {
				if trg.Metadata[k] != want {
					t.Errorf("%s: trigger %s is %q, want %q", d.file, k, trg.Metadata[k], want)
				}
			}
		}
	}

	checkNATSValues(t, helmValues)
}

func podUID(sc *struct {
	RunAsNonRoot *bool  `yaml:"runAsNonRoot"`
	RunAsUser    *int64 `yaml:"runAsUser"`
}) *int64 {
	if sc == nil {
		return nil
	}
	return sc.RunAsUser
}

func containerUID(sc *struct {
	RunAsNonRoot             *bool  `yaml:"runAsNonRoot"`
	RunAsUser                *int64 `yaml:"runAsUser"`
	ReadOnlyRootFilesystem   *bool  `yaml:"readOnlyRootFilesystem"`
	AllowPrivilegeEscalation *bool  `yaml:"allowPrivilegeEscalation"`
}) *int64 {
	if sc == nil {
		return nil
	}
	return sc.RunAsUser
}

func checkProbe(t *testing.T, where string, p *probe, path, port string, ctr container) {
	t.Helper()
	if p == nil || p.HTTPGet == nil {
		t.Errorf("%s: missing httpGet probe of %s", where, path)
		return
	}
	if p.HTTPGet.Path != path {
		t.Errorf("%s: path %q, want %q", where, p.HTTPGet.Path, path)
	}
	got := yamlScalar(p.HTTPGet.Port)
	for _, cp := range ctr.Ports { // a named port
		if cp.Name == got {
			got = strconv.Itoa(cp.ContainerPort)
		}
	}
	if got != port {
		t.Errorf("%s: port %s, but HTTP_ADDR listens on %s", where, got, port)
	}
}

// checkNATSValues checks the Helm values give a 3-node JetStream cluster on
// file storage, which NATS_STREAM_REPLICAS=3 needs.
func checkNATSValues(t *testing.T, values map[string]*yaml.Node) {
	t.Helper()
	n, ok := values[filepath.Join(k8sDir, "nats-values.yaml")]
	if !ok {
		t.Errorf("%s/nats-values.yaml: missing", k8sDir)
		return
	}
	var v struct {
		Config struct {
			Cluster struct {
				Enabled  bool `yaml:"enabled"`
				Replicas int  `yaml:"replicas"`
			} `yaml:"cluster"`
			JetStream struct {
				Enabled   bool `yaml:"enabled"`
				FileStore struct {
					PVC struct {
						Size string `yaml:"size"`
					} `yaml:"pvc"`
				} `yaml:"fileStore"`
			} `yaml:"jetstream"`
		} `yaml:"config"`
	}
	if err := n.Decode(&v); err != nil {
		t.Fatalf("nats-values.yaml: %v", err)
	}
	if !v.Config.Cluster.Enabled || v.Config.Cluster.Replicas != 3 {
		t.Errorf("nats-values.yaml: config.cluster = %+v, want enabled with 3 replicas", v.Config.Cluster)
	}
	if !v.Config.JetStream.Enabled || v.Config.JetStream.FileStore.PVC.Size == "" {
		t.Errorf("nats-values.yaml: config.jetstream = %+v, want enabled with a fileStore pvc size", v.Config.JetStream)
	}
}

// ---------------------------------------------------------------------------
// Metrics: Grafana and Prometheus

var (
	metricRe      = regexp.MustCompile(`[a-zA-Z_:][a-zA-Z0-9_:]*`)
	histSuffixRe  = regexp.MustCompile(`_(bucket|sum|count)$`)
	promDurationR = regexp.MustCompile(`^([0-9]+(ms|s|m|h|d|w|y))+$`)
)

// checkExpr reports what is wrong with the metric names in a PromQL
// expression, and returns the contract metrics it uses.
func checkExpr(expr string) (used []string, problems []string) {
	if strings.Count(expr, "(") != strings.Count(expr, ")") || strings.Count(expr, "{") != strings.Count(expr, "}") ||
		strings.Count(expr, "[") != strings.Count(expr, "]") {
		problems = append(problems, "unbalanced brackets")
	}
	for _, id := range metricRe.FindAllString(expr, -1) {
		if !strings.HasPrefix(id, "ozmap_") {
			continue
		}
		base := id
		typ, ok := metricContract[id]
		if !ok {
			base = histSuffixRe.ReplaceAllString(id, "")
			typ, ok = metricContract[base]
			if ok && typ != "histogram" {
				ok = false
			}
		} else if typ == "histogram" {
			// A histogram has no series under its bare name.
			problems = append(problems, id+" is a histogram: use _bucket, _sum or _count")
			continue
		}
		if !ok {
			problems = append(problems, id+" is not an exported metric")
			continue
		}
		used = append(used, base)
	}
	if len(used) == 0 && len(problems) == 0 {
		problems = append(problems, "uses no ozmap_sync metric")
	}
	return used, problems
}

func TestGrafanaDashboard(t *testing.T) {
	data, err := os.ReadFile(dashboard)
	if err != nil {
		t.Fatal(err)
	}
	type target struct {
		RefID      string         `json:"refId"`
		Expr       string         `json:"expr"`
		Datasource map[string]any `json:"datasource"`
	}
	type panel struct {
		ID         int            `json:"id"`
		Type       string         `json:"type"`
		Title      string         `json:"title"`
		Datasource map[string]any `json:"datasource"`
		Targets    []target       `json:"targets"`
		Panels     []panel        `json:"panels"` // collapsed rows
	}
	var d struct {
		UID        string  `json:"uid"`
		Title      string  `json:"title"`
		Panels     []panel `json:"panels"`
		Templating struct {
			List []struct {
				Name  string `json:"name"`
				Type  string `json:"type"`
				Query string `json:"query"`
			} `json:"list"`
		} `json:"templating"`
	}
	if err := json.Unmarshal(data, &d); err != nil {
		t.Fatalf("%s: %v", dashboard, err)
	}
	if d.UID == "" || d.Title == "" {
		t.Errorf("%s: uid and title must be set", dashboard)
	}
	if !slices.ContainsFunc(d.Templating.List, func(v struct {
		Name  string `json:"name"`
		Type  string `json:"type"`
		Query string `json:"query"`
	}) bool {
		return v.Name == "DS_PROMETHEUS" && v.Type == "datasource" && v.Query == "prometheus"
	}) {
		t.Errorf("%s: no datasource variable DS_PROMETHEUS of type prometheus", dashboard)
	}

	const ds = "${DS_PROMETHEUS}"
	ids := map[int]string{}
	used := map[string]bool{}
	var walk func([]panel)
	walk = func(ps []panel) {
		for _, p := range ps {
			walk(p.Panels)
			if p.Type == "row" {
				continue
			}
			if prev, dup := ids[p.ID]; dup {
				t.Errorf("%s: panels %q and %q share id %d", dashboard, prev, p.Title, p.ID)
			}
			ids[p.ID] = p.Title
			if p.Datasource["uid"] != ds {
				t.Errorf("%s: panel %q datasource %v, want uid %s", dashboard, p.Title, p.Datasource, ds)
			}
			if len(p.Targets) == 0 {
				t.Errorf("%s: panel %q has no queries", dashboard, p.Title)
			}
			for _, tg := range p.Targets {
				if tg.Datasource != nil && tg.Datasource["uid"] != ds {
					t.Errorf("%s: panel %q query %s datasource %v, want uid %s", dashboard, p.Title, tg.RefID, tg.Datasource, ds)
				}
				u, problems := checkExpr(tg.Expr)
				for _, pr := range problems {
					t.Errorf("%s: panel %q query %s: %s in %q", dashboard, p.Title, tg.RefID, pr, tg.Expr)
				}
				for _, m := range u {
					used[m] = true
				}
			}
		}
	}
	walk(d.Panels)
	for m := range metricContract {
		if !used[m] {
			t.Errorf("%s: no panel shows %s", dashboard, m)
		}
	}
}

func TestPrometheusAlerts(t *testing.T) {
	data, err := os.ReadFile(alertsFile)
	if err != nil {
		t.Fatal(err)
	}
	var f struct {
		Groups []struct {
			Name  string `yaml:"name"`
			Rules []struct {
				Alert       string            `yaml:"alert"`
				Record      string            `yaml:"record"`
				Expr        string            `yaml:"expr"`
				For         string            `yaml:"for"`
				Labels      map[string]string `yaml:"labels"`
				Annotations map[string]string `yaml:"annotations"`
			} `yaml:"rules"`
		} `yaml:"groups"`
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true) // a misspelt key (e.g. "annotation") is an error
	if err := dec.Decode(&f); err != nil {
		t.Fatalf("%s: %v", alertsFile, err)
	}
	if len(f.Groups) == 0 {
		t.Fatalf("%s: no groups", alertsFile)
	}

	// The alerts operators rely on, with a fragment their runbook must
	// contain.
	want := map[string][]string{
		"OzmapSyncDeadLetters":         {"nats stream view OZMAP_BOXES_DLQ", "consumer replay"},
		"OzmapSyncBreakerOpen":         {"Sytex"},
		"OzmapSyncNoSuccessfulRun":     {"producer -once"},
		"OzmapSyncBacklogNotShrinking": {"nats consumer info OZMAP_BOXES sytex-upsert"},
	}
	seen := map[string]bool{}
	for _, g := range f.Groups {
		if g.Name == "" {
			t.Errorf("%s: a group has no name", alertsFile)
		}
		for i, r := range g.Rules {
			name := r.Alert
			if name == "" {
				t.Errorf("%s: group %s rule %d has no alert name", alertsFile, g.Name, i)
				name = "#" + strconv.Itoa(i)
			}
			if seen[name] {
				t.Errorf("%s: alert %s defined twice", alertsFile, name)
			}
			seen[name] = true
			if strings.TrimSpace(r.Expr) == "" {
				t.Errorf("%s: %s has no expr", alertsFile, name)
			} else {
				_, problems := checkExpr(r.Expr)
				for _, p := range problems {
					t.Errorf("%s: %s: %s in %q", alertsFile, name, p, r.Expr)
				}
			}
			if !promDurationR.MatchString(r.For) {
				t.Errorf("%s: %s: for %q is not a Prometheus duration like 15m", alertsFile, name, r.For)
			}
			if r.Labels["severity"] == "" {
				t.Errorf("%s: %s has no severity label", alertsFile, name)
			}
			for _, a := range []string{"summary", "description"} {
				if strings.TrimSpace(r.Annotations[a]) == "" {
					t.Errorf("%s: %s has no %s annotation", alertsFile, name, a)
				}
			}
			for _, frag := range want[name] {
				if !strings.Contains(r.Annotations["description"], frag) {
					t.Errorf("%s: %s description does not mention %q", alertsFile, name, frag)
				}
			}
		}
	}
	for name := range want {
		if !seen[name] {
			t.Errorf("%s: alert %s is missing", alertsFile, name)
		}
	}
}

func keys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// ---------------------------------------------------------------------------
// README

// The README's configuration table lists every variable the programs read,
// with the default config.go gives it, and no variable they do not read.
func TestREADMEConfigurationTable(t *testing.T) {
	c := loadContract(t)
	data, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(data), "\n## Configuration\n")
	if !ok {
		t.Fatal("README.md has no Configuration section")
	}
	section, _, _ = strings.Cut(section, "\n## ")
	rowRe := regexp.MustCompile("(?m)^\\| ((?:`[A-Z0-9_]+`(?:, )?)+) \\| [^|]+ \\| ([^|]+) \\|")
	listed := map[string]string{}
	for _, m := range rowRe.FindAllStringSubmatch(section, -1) {
		for _, name := range regexp.MustCompile("`([A-Z0-9_]+)`").FindAllStringSubmatch(m[1], -1) {
			listed[name[1]] = strings.TrimSpace(m[2])
		}
	}
	if len(listed) < 20 {
		t.Fatalf("found only %d variables in the README's table; is the parser right?", len(listed))
	}
	for name, v := range c.vars {
		def, ok := listed[name]
		switch {
		case !ok:
			t.Errorf("README.md's configuration table does not list %s", name)
		case v.Required && def != "required":
			t.Errorf("README.md: %s is required, the table says %q", name, def)
		case v.Default != "" && !strings.Contains(def, "`"+v.Default+"`"):
			t.Errorf("README.md: %s defaults to %q in config.go, the table says %q", name, v.Default, def)
		}
	}
	for name := range listed {
		if _, ok := c.vars[name]; !ok {
			t.Errorf("README.md lists %s, which the programs do not read", name)
		}
	}
}
