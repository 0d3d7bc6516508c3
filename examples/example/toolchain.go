package example

import (
	"fmt"
	"os/exec"
	"strings"
)

// tool is a program a language's build needs, and the Debian packages
// that install it.
type tool struct{ name, packages string }

// toolchains are what building a Python, C++ or Java server on its
// runtime needs (scripts/setup.sh installs them all).
var toolchains = map[string][]tool{
	"python": {{"/usr/bin/python3", "python3-grpcio python3-grpc-tools"}},
	"cpp": {{"protoc", "protobuf-compiler"}, {"make", "make"}, {"g++", "g++"}, {"pkg-config", "pkg-config"},
		{"grpc_cpp_plugin", "protobuf-compiler-grpc libgrpc++-dev"}},
	"java": {{"protoc", "protobuf-compiler"}, {"javac", "default-jdk-headless"},
		{"grpc_java_plugin", "protobuf-compiler-grpc-java-plugin libgrpc-java libprotobuf-java libnetty-java libperfmark-java libgeronimo-annotation-1.3-spec-java"}},
}

// RequireToolchain reports, naming the Debian packages to install, the
// first tool of lang's toolchain ("python", "cpp" or "java") that is
// missing. The reference servers' builds and `kuberpc new` and `gen`
// both check with it.
func RequireToolchain(lang string) error {
	for _, t := range toolchains[lang] {
		if _, err := exec.LookPath(t.name); err != nil {
			return fmt.Errorf("%s is not installed; the %s toolchain comes from Debian: apt-get install %s", t.name, lang, t.packages)
		}
	}
	if lang == "python" {
		if out, err := exec.Command("/usr/bin/python3", "-c", "import grpc, grpc_tools").CombinedOutput(); err != nil {
			return fmt.Errorf("/usr/bin/python3 cannot import grpc and grpc_tools (%s); apt-get install python3-grpcio python3-grpc-tools", strings.TrimSpace(string(out)))
		}
	}
	return nil
}
