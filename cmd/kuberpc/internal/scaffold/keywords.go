package scaffold

import (
	"fmt"
	"slices"
	"strings"

	"google.golang.org/protobuf/types/descriptorpb"
)

// The code generators Debian ships copy some proto names into the code
// as they are: protoc 3.21's C++ generator the package's components as
// namespaces; grpc's C++ generator the methods, and the messages, which
// protoc itself escapes, so the two disagree; protoc's Java generator
// the package (without java_package); and grpcio-tools' Python
// generator the methods. (grpc-java's generator appends _ to a method
// named like a Java keyword, as javaMethod does.) A name that is a
// keyword of the language then makes code that does not compile, and
// the compiler's complaint about generated files does not say which
// name of the proto to change. unescaped says it first.

var cppKeywords = strings.Fields(`alignas alignof and and_eq asm auto bitand bitor bool break case catch
	char char8_t char16_t char32_t class compl concept const consteval constexpr constinit const_cast
	continue co_await co_return co_yield decltype default delete do double dynamic_cast else enum
	explicit export extern false float for friend goto if inline int long mutable namespace new
	noexcept not not_eq nullptr operator or or_eq private protected public register reinterpret_cast
	requires return short signed sizeof static static_assert static_cast struct switch template this
	thread_local throw true try typedef typeid typename union unsigned using virtual void volatile
	wchar_t while xor xor_eq`)

var javaKeywords = strings.Fields(`abstract assert boolean break byte case catch char class const continue
	default do double else enum extends final finally float for goto if implements import instanceof
	int interface long native new package private protected public return short static strictfp super
	switch synchronized this throw throws transient try void volatile while true false null _`)

var pythonKeywords = strings.Fields(`False None True and as assert async await break class continue def
	del elif else except finally for from global if import in is lambda nonlocal not or pass raise
	return try while with yield`)

// unescaped reports the first name of the user's protos in set that
// lang's generator would copy into code where it is a keyword (none for
// Go: its generators capitalise every name they declare, and no Go
// keyword is capitalised).
func unescaped(set *descriptorpb.FileDescriptorSet, user []string, lang string) error {
	for _, fd := range set.GetFile() {
		if !slices.Contains(user, fd.GetName()) {
			continue
		}
		switch lang {
		case "cpp":
			for _, part := range strings.Split(fd.GetPackage(), ".") {
				if slices.Contains(cppKeywords, part) {
					return fmt.Errorf("%s: package %s: %q is a C++ keyword, which protoc's C++ generator makes a namespace as it is, so the generated code would not compile; rename the package", fd.GetName(), fd.GetPackage(), part)
				}
			}
			for _, m := range fd.GetMessageType() {
				if slices.Contains(cppKeywords, m.GetName()) {
					return fmt.Errorf("%s: message %s: %q is a C++ keyword: protoc names its class %s_, but grpc's C++ generator refers to it as %s, so the generated code would not compile; rename the message", fd.GetName(), m.GetName(), m.GetName(), m.GetName(), m.GetName())
				}
			}
			for _, s := range fd.GetService() {
				for _, m := range s.GetMethod() {
					if slices.Contains(cppKeywords, m.GetName()) {
						return fmt.Errorf("%s: method %s.%s: %q is a C++ keyword, which grpc's C++ generator makes a C++ method as it is, so the generated code would not compile; rename the method", fd.GetName(), s.GetName(), m.GetName(), m.GetName())
					}
				}
			}
		case "java":
			if fd.GetOptions().GetJavaPackage() != "" {
				continue
			}
			for _, part := range strings.Split(fd.GetPackage(), ".") {
				if slices.Contains(javaKeywords, part) {
					return fmt.Errorf("%s: package %s: %q is a Java keyword, which protoc's Java generator puts in the Java package as it is, so the generated code would not compile; set option java_package (or rename the package)", fd.GetName(), fd.GetPackage(), part)
				}
			}
		case "python":
			for _, s := range fd.GetService() {
				for _, m := range s.GetMethod() {
					if slices.Contains(pythonKeywords, m.GetName()) {
						return fmt.Errorf("%s: method %s.%s: %q is a Python keyword, which grpcio-tools' generator makes a Python method as it is, so the generated code would not compile; rename the method", fd.GetName(), s.GetName(), m.GetName(), m.GetName())
					}
				}
			}
		}
	}
	return nil
}
