import CloudHypervisorAPI
import CloudHypervisorAPITesting
import Foundation
import Testing
import VMM

/// docs/api/cloud-hypervisor-swift.yaml against the server: every documented path and method is
/// served, every endpoint is documented, and what each operation answers is documented.
@Suite("OpenAPI contract")
struct ContractTests {
    struct Operation: CustomStringConvertible {
        var path: String
        var method: String
        var statuses: [Int]
        var takesBody: Bool
        var description: String { "\(method.uppercased()) \(path)" }
    }

    /// The document, found from this source file's location in the repository.
    static let document = repositoryFile("docs/api/cloud-hypervisor-swift.yaml")

    /// The operations, read with a line scanner (the document keeps a fixed indentation).
    static let operations: [Operation] = {
        var found: [Operation] = []
        var path: String?
        for line in document.split(separator: "\n", omittingEmptySubsequences: false).map(String.init) {
            if line.hasPrefix("components:") { break }
            if line.hasPrefix("  /"), line.hasSuffix(":") {
                path = String(line.dropFirst(2).dropLast())
            } else if let path, line == "    get:" || line == "    put:" {
                found.append(Operation(path: path, method: line.trimmingCharacters(in: .whitespaces).replacingOccurrences(of: ":", with: ""),
                                       statuses: [], takesBody: false))
            } else if line.hasPrefix("      requestBody:") {
                found[found.count - 1].takesBody = true
            } else if line.hasPrefix("        '"), line.hasSuffix("':"), let code = Int(line.trimmingCharacters(in: CharacterSet(charactersIn: " ':"))) {
                found[found.count - 1].statuses.append(code)
            }
        }
        return found
    }()

    /// A file of the repository, found from this source file's location.
    static func repositoryFile(_ path: String) -> String {
        let repository = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        return (try? String(contentsOf: repository.appendingPathComponent(path), encoding: .utf8)) ?? ""
    }

    /// Cloud Hypervisor v53.0's document as Scripts/api-fuzz/openapi_index.py indexes it: one
    /// tab-separated fact a line (`path`, `schema`, `field`), comments skipped.
    static let cloudHypervisorIndex: [[String]] = repositoryFile("Tests/CloudHypervisorAPITests/Fixtures/ch-v53.0-openapi-index.txt")
        .split(separator: "\n").filter { !$0.hasPrefix("#") }.map { $0.split(separator: "\t", omittingEmptySubsequences: false).map(String.init) }

    /// Our document indexed the way openapi_index.py indexes a document, read with a line scanner
    /// that relies on the document's fixed indentation (paths at 2 spaces, schemas at 4, their
    /// keys at 6, fields at 8, field keys at 10, a field's items at 12; lists in flow style).
    /// Like openapi_index.py it leaves `nullable` out: Cloud Hypervisor's document marks no field
    /// nullable although its decoder (serde) takes null for every `Option` field, and ours says so,
    /// so comparing it would only compare the two documents' silence.
    static let documentIndex: [[String]] = OpenAPIIndexer(document).lines

    @Test("every path and schema of Cloud Hypervisor v53.0's document is in ours, with the same fields, types, required lists, enums and defaults")
    func cloudHypervisorCoverage() {
        let fixture = Self.cloudHypervisorIndex
        let ours = Self.documentIndex
        #expect(fixture.count > 300, "Tests/CloudHypervisorAPITests/Fixtures/ch-v53.0-openapi-index.txt not found or short")
        #expect(ours.count > 300, "docs/api/cloud-hypervisor-swift.yaml not found or short")
        let ourLines = Set(ours.map { $0.joined(separator: "\t") })
        func ourRow(_ kind: String, _ keys: String...) -> [String]? {
            ours.first { $0.first == kind && Array($0.dropFirst().prefix(keys.count)) == keys }
        }
        for row in fixture {
            switch row.first {
            case "path":
                // path, method, request body schema, schema of the first 2xx answer.
                guard let mine = ourRow("path", row[1], row[2]) else {
                    Issue.record("\(row[2].uppercased()) \(row[1]) of Cloud Hypervisor's document is missing from ours")
                    continue
                }
                #expect(mine[3] == row[3], "\(row[1]): request body \(mine[3]), Cloud Hypervisor's is \(row[3])")
                // An operation this VMM cannot succeed at documents no 2xx, so no 2xx schema.
                let succeeds = Self.operations.first { $0.path == row[1] && $0.method == row[2] }?.statuses.contains { (200..<300).contains($0) } ?? false
                if succeeds { #expect(mine[4] == row[4], "\(row[1]): 2xx answer \(mine[4]), Cloud Hypervisor's is \(row[4])") }
            case "schema":
                let mine = ourRow("schema", row[1]), same = ourLines.contains(row.joined(separator: "\t"))
                #expect(same,
                        "schema \(row[1]): ours is \(mine.map { $0.joined(separator: " ") } ?? "missing"), Cloud Hypervisor's is \(row.joined(separator: " "))")
            case "field":
                let mine = ourRow("field", row[1], row[2]), same = ourLines.contains(row.joined(separator: "\t"))
                #expect(same,
                        "\(row[1]).\(row[2]): ours is \(mine.map { $0.joined(separator: " ") } ?? "missing"), Cloud Hypervisor's is \(row.joined(separator: " "))")
            default:
                Issue.record("unknown fixture line \(row)")
            }
        }
        let theirPaths = Set(fixture.filter { $0.first == "path" }.map { $0[1] })
        let ourPaths = Set(ours.filter { $0.first == "path" }.map { $0[1] })
        #expect(ourPaths == theirPaths, "paths only in ours: \(ourPaths.subtracting(theirPaths).sorted())")
    }

    @Test("the document lists exactly the endpoints the server routes, with their methods and bodies")
    func coverage() {
        #expect(!Self.operations.isEmpty, "docs/api/cloud-hypervisor-swift.yaml not found or empty")
        let documented = Set(Self.operations.map { "\($0.method.uppercased()) /api/v1\($0.path)" })
        let served = Set(APIEndpoint.allCases.map { "\($0.method.rawValue) \($0.path)" })
        #expect(documented == served)
        for operation in Self.operations {
            guard let endpoint = APIEndpoint(path: "/api/v1" + operation.path) else { continue }
            let needsBody: Bool
            switch endpoint.body {
            case .none, .ignored: needsBody = false
            default: needsBody = true
            }
            #expect(operation.takesBody == needsBody, "\(operation)")
        }
    }

    /// The state in which an operation succeeds, and a body that fits Cloud Hypervisor's schema.
    static func successScenario(_ endpoint: APIEndpoint) -> (state: VMState?, body: String?) {
        switch endpoint {
        case .vmmPing, .vmmShutdown: (nil, nil)
        case .vmCreate: (nil, validConfigJSON)
        case .vmBoot: (.created, nil)
        case .vmResume: (.paused, nil)
        case .vmInfo, .vmCounters, .vmDelete, .vmPause, .vmShutdown, .vmReboot, .vmPowerButton, .vmNmi: (.running, nil)
        case .vmResize: (.running, #"{"desired_vcpus":1,"desired_ram":536870912}"#)
        case .vmAddDisk: (.running, #"{"path":"/nonexistent/disk.img","id":"disk9"}"#)
        case .vmAddNet: (.running, #"{"tap":"vmtap9","id":"net9"}"#)
        case .vmRemoveDevice: (.running, #"{"id":"disk9"}"#)
        case .vmAddFs: (.running, #"{"tag":"fs0","socket":"/nonexistent/fs.sock","num_queues":1,"queue_size":1024}"#)
        case .vmAddPmem: (.running, #"{"file":"/nonexistent/pmem.img"}"#)
        case .vmAddVsock: (.running, #"{"cid":3,"socket":"/nonexistent/vsock.sock"}"#)
        case .vmAddVdpa: (.running, #"{"path":"/dev/vhost-vdpa-0","num_queues":1}"#)
        case .vmAddDevice: (.running, #"{"path":"/sys/bus/pci/devices/0000:01:00.0"}"#)
        case .vmAddUserDevice: (.running, #"{"socket":"/nonexistent/user.sock"}"#)
        case .vmAddGenericVhostUser: (.running, #"{"socket":"/nonexistent/vu.sock","queue_sizes":[256],"device_type":1}"#)
        case .vmResizeDisk: (.running, #"{"id":"disk9","desired_size":1073741824}"#)
        case .vmResizeZone: (.running, #"{"id":"zone0","desired_ram":1073741824}"#)
        case .vmSnapshot: (.paused, #"{"destination_url":"file:///nonexistent/snapshot"}"#)
        case .vmCoredump: (.paused, #"{"destination_url":"file:///nonexistent/core"}"#)
        case .vmRestore: (nil, #"{"source_url":"file:///nonexistent/snapshot"}"#)
        case .vmSendMigration: (.running, #"{"destination_url":"unix:/nonexistent/migration.sock"}"#)
        case .vmReceiveMigration: (nil, #"{"receiver_url":"unix:/nonexistent/migration.sock"}"#)
        }
    }

    @Test("each documented operation answers its documented 2xx to a schema-valid body in its success scenario; one with no 2xx refuses it as documented (400 naming an absent feature, or 500 not supported)",
          arguments: operations)
    func success(operation: Operation) throws {
        let endpoint = try #require(APIEndpoint(path: "/api/v1" + operation.path))
        let scenario = Self.successScenario(endpoint)
        try withServer(control: try fake(in: scenario.state)) { _, path throws in
            if endpoint == .vmRemoveDevice || endpoint == .vmResizeDisk {
                // Something to remove or resize: the disk vm.add-disk's scenario plugs in.
                let added = try send(path, "PUT", APIEndpoint.vmAddDisk.path, body: Self.successScenario(.vmAddDisk).body)
                #expect(added.status == 200, "vm.add-disk before vm.remove-device: \(added.text)")
            }
            let response = try send(path, operation.method.uppercased(), "/api/v1" + operation.path, body: scenario.body)
            if let success = operation.statuses.first(where: { (200..<300).contains($0) }) {
                #expect(response.status == success, "\(operation): \(response.text)")
            } else if operation.statuses.contains(500) {
                #expect(response.status == 500 && response.text.contains("is not supported by this VMM yet"), "\(operation): \(response.status) \(response.text)")
            } else {
                #expect(response.status == 400 && response.text.contains("absent feature"), "\(operation): \(response.status) \(response.text)")
            }
            if response.status == 200, !response.body.isEmpty {
                #expect(response.header("Content-Type") == "application/json")
                _ = try JSONSerialization.jsonObject(with: Data(response.body))
            }
        }
    }

    @Test("a member the body's schema does not list is ignored whatever its type, like any unknown field: the decoder reads no field the document leaves out",
          arguments: operations.filter(\.takesBody))
    func undocumentedMembersIgnored(operation: Operation) throws {
        let endpoint = try #require(APIEndpoint(path: "/api/v1" + operation.path))
        let scenario = Self.successScenario(endpoint)
        let index = Self.documentIndex
        let schema = try #require(index.first { $0.first == "path" && $0[1] == operation.path && $0[2] == operation.method }?[3])
        let documented = Set(index.filter { $0.first == "field" && $0[1] == schema }.map { $0[2] })
        // Every field name used anywhere in the document: the names a decoder might read.
        let candidates = Set(index.filter { $0.first == "field" }.map { $0[2] }).subtracting(documented).sorted()
        #expect(candidates.count > 50)
        let base = try #require(scenario.body)
        try withServer(control: try fake(in: scenario.state)) { _, path throws in
            for name in candidates {
                let body = "{\"\(name)\":{\"x\":[1]}," + base.dropFirst()
                let response = try send(path, operation.method.uppercased(), "/api/v1" + operation.path, body: body)
                #expect(!response.text.contains("'\(name)':"), "\(operation) with an undocumented '\(name)' member: \(response.status) \(response.text)")
            }
        }
    }

    @Test("a member a nested object's schema does not list (vm.create's serial, a disk's rate limiter...) is ignored whatever its type",
          arguments: operations.filter(\.takesBody))
    func undocumentedNestedMembersIgnored(operation: Operation) throws {
        let endpoint = try #require(APIEndpoint(path: "/api/v1" + operation.path))
        let scenario = Self.successScenario(endpoint)
        let index = Self.documentIndex
        let root = try #require(index.first { $0.first == "path" && $0[1] == operation.path && $0[2] == operation.method }?[3])
        let text = try #require(scenario.body)
        let base = try #require(try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any])
        let all = Set(index.filter { $0.first == "field" }.map { $0[2] })
        let nested = Self.nestedObjects(of: root, index: index)
        if root == "VmConfig" { #expect(nested.count > 30, "VmConfig's nested objects: \(nested.count)") }
        try withServer(control: try fake(in: scenario.state)) { _, path throws in
            for object in nested where !Self.closedSchemas.contains(object.last?.schema ?? "") {
                let schema = try #require(object.last?.schema)
                let documented = Set(index.filter { $0.first == "field" && $0[1] == schema }.map { $0[2] })
                let where_ = object.map { $0.key + ($0.isArray ? "[0]" : "") }.joined(separator: ".")
                for name in all.subtracting(documented).sorted() {
                    let body = Self.replacing(in: base, along: object[...], index: index) { inner in
                        var inner = inner
                        inner[name] = ["x": [1]]
                        return inner
                    }
                    let text = String(decoding: try JSONSerialization.data(withJSONObject: body), as: UTF8.self)
                    let response = try send(path, operation.method.uppercased(), "/api/v1" + operation.path, body: text)
                    #expect(!response.text.contains("field '\(where_).\(name)"),
                            "\(operation) with an undocumented \(where_).\(name) (\(schema)): \(response.status) \(response.text)")
                    if endpoint == .vmCreate { _ = try send(path, "PUT", "/api/v1/vm.delete") }
                }
            }
        }
    }

    /// The schemas the document closes (`additionalProperties: false`): an unknown member is
    /// refused there, as Cloud Hypervisor's decoder denies it.
    static let closedSchemas: Set<String> = {
        var found: Set<String> = [], schema = ""
        for line in document.split(separator: "\n").map(String.init) {
            if line.hasPrefix("    "), !line.hasPrefix("     "), line.hasSuffix(":") {
                schema = line.trimmingCharacters(in: .whitespaces).replacingOccurrences(of: ":", with: "")
            } else if line == "      additionalProperties: false" {
                found.insert(schema)
            }
        }
        return found
    }()

    /// One step from an object to a nested one: the member, whether it is an array (its first
    /// item stands for all), and the nested object's schema.
    struct Step { var key: String, isArray: Bool, schema: String }

    /// The object schemas reachable from `schema` through its members, each as the steps to it,
    /// to `depth` levels (a schema already on the way is not entered again).
    static func nestedObjects(of schema: String, index: [[String]], depth: Int = 3, along: [Step] = []) -> [[Step]] {
        guard depth > 0 else { return [] }
        var found: [[Step]] = []
        for field in index where field.first == "field" && field[1] == schema {
            var type = field[3]
            let isArray = type.hasPrefix("array<")
            if isArray { type = String(type.dropFirst(6).dropLast()) }
            guard index.contains(where: { $0.first == "schema" && $0[1] == type && $0[2] == "object" }),
                  !along.contains(where: { $0.schema == type }) else { continue }
            let steps = along + [Step(key: field[2], isArray: isArray, schema: type)]
            found.append(steps)
            found += nestedObjects(of: type, index: index, depth: depth - 1, along: steps)
        }
        return found
    }

    /// A value of a documented type with the least in it: an object of a schema has its required
    /// members only.
    static func minimalValue(_ type: String, index: [[String]]) -> Any {
        if type.hasPrefix("array") { return [Any]() }
        if type.hasPrefix("string") { return "x" }
        if type.hasPrefix("integer") || type.hasPrefix("number") { return 1 }
        if type == "boolean" { return false }
        guard let schema = index.first(where: { $0.first == "schema" && $0[1] == type }) else { return [String: Any]() }
        switch schema[2] {
        case "object":
            var object: [String: Any] = [:]
            for name in schema[3].split(separator: ",").map(String.init) where name != "-" {
                let field = index.first { $0.first == "field" && $0[1] == type && $0[2] == name }
                object[name] = minimalValue(field?[3] ?? "string", index: index)
            }
            return object
        case "string": return schema[4] == "-" ? "x" : String(schema[4].split(separator: "|")[0])
        default: return minimalValue(schema[2], index: index)
        }
    }

    /// `object` with the nested object at the end of `steps` changed by `change` (members on the
    /// way that `object` lacks are made with their required members only).
    static func replacing(in object: [String: Any], along steps: ArraySlice<Step>, index: [[String]],
                          _ change: ([String: Any]) -> [String: Any]) -> [String: Any] {
        guard let step = steps.first else { return change(object) }
        var object = object
        let fresh = { minimalValue(step.schema, index: index) as? [String: Any] ?? [:] }
        if step.isArray {
            var items = object[step.key] as? [Any] ?? []
            let item = replacing(in: items.first as? [String: Any] ?? fresh(), along: steps.dropFirst(), index: index, change)
            if items.isEmpty { items = [item] } else { items[0] = item }
            object[step.key] = items
        } else {
            object[step.key] = replacing(in: object[step.key] as? [String: Any] ?? fresh(), along: steps.dropFirst(), index: index, change)
        }
        return object
    }

    @Test("every answer in every state, with and without a body, is a documented status", arguments: operations)
    func documentedStatuses(operation: Operation) throws {
        for state in [nil, VMState.created, .running, .paused, .shutdown] {
            for body in [nil, "{}", "{", #"{"unknown":1}"#] {
                try withServer(control: try fake(in: state)) { _, path throws in
                    let response = try send(path, operation.method.uppercased(), "/api/v1" + operation.path, body: body)
                    #expect(operation.statuses.contains(response.status),
                            "\(operation) in \(String(describing: state)) with \(body ?? "no body"): \(response.status) \(response.text)")
                    if response.status >= 400 {
                        #expect(!messages(response).isEmpty, "\(operation): error body \(response.text)")
                    }
                }
            }
        }
    }
}

/// Indexes an OpenAPI document written with this repository's fixed indentation, in the format of
/// Scripts/api-fuzz/openapi_index.py (which reads any YAML with PyYAML).
struct OpenAPIIndexer {
    private(set) var lines: [[String]] = []

    private struct Node {
        var type = "", format = "", ref = "", defaultValue = "-", deprecated = false
        var items: (type: String, format: String, ref: String) = ("", "", "")

        var typeName: String {
            func name(_ type: String, _ format: String, _ ref: String) -> String {
                ref.isEmpty ? (format.isEmpty ? type : "\(type)/\(format)") : ref
            }
            return type == "array" ? "array<\(name(items.type, items.format, items.ref))>" : name(type, format, ref)
        }
    }

    init(_ document: String) {
        var topLevel = ""
        // Paths: the operation being read, the section of it (request body or a response code).
        var operation: (path: String, method: String, body: String, responses: [(code: String, schema: String)])?
        var path = "", section = ""
        // Components: the schema, its fields, the keys being read at levels 6 and 10.
        var schemaName: String?
        var schema = Node(), required = "-", enumeration = "-"
        var fields: [(String, Node)] = []
        var schemaKey = "", fieldKey = ""

        func flushOperation() {
            guard let op = operation else { return }
            let success = op.responses.sorted { $0.code < $1.code }.first { $0.code.hasPrefix("2") }?.schema ?? ""
            lines.append(["path", op.path, op.method, op.body.isEmpty ? "-" : op.body, success.isEmpty ? "-" : success])
            operation = nil
        }
        func flushSchema() {
            guard let name = schemaName else { return }
            lines.append(["schema", name, schema.type.isEmpty ? "-" : schema.type, required, enumeration, schema.defaultValue])
            for (field, node) in fields {
                lines.append(["field", name, field, node.typeName.isEmpty ? "-" : node.typeName, node.defaultValue, node.deprecated ? "true" : "-"])
            }
            schemaName = nil
        }

        for raw in document.split(separator: "\n", omittingEmptySubsequences: false) {
            let line = String(raw)
            let indent = line.prefix { $0 == " " }.count
            let text = line.dropFirst(indent)
            guard !text.isEmpty, !text.hasPrefix("#"), !text.hasPrefix("- ") else { continue }
            let key = text.prefix { $0 != ":" }
            let rest = Self.scalar(String(text.dropFirst(key.count + 1)))
            let name = Self.scalar(String(key))
            if indent == 0 {
                flushOperation()
                topLevel = name
                continue
            }
            if topLevel == "paths" {
                switch indent {
                case 2: flushOperation(); path = name
                case 4: flushOperation(); operation = (path, name, "", [])
                case 6: section = name == "requestBody" ? "body" : ""
                case 8 where section != "body" && Int(name) != nil: section = name; operation?.responses.append((name, ""))
                default:
                    guard key == "$ref", operation != nil else { break }
                    let target = Self.refName(rest)
                    if section == "body" { operation?.body = target } else if let last = operation?.responses.indices.last { operation?.responses[last].schema = target }
                }
                continue
            }
            guard topLevel == "components" else { continue }
            switch indent {
            case 4:
                flushSchema()
                schemaName = name
                schema = Node(); required = "-"; enumeration = "-"; fields = []; schemaKey = ""
            case 6:
                schemaKey = name
                switch name {
                case "type": schema.type = rest
                case "required": required = Self.list(rest).joined(separator: ",").nonEmpty
                case "enum": enumeration = Self.list(rest).joined(separator: "|").nonEmpty
                case "default": schema.defaultValue = Self.json(rest)
                default: break
                }
            case 8 where schemaKey == "properties":
                fields.append((name, Node())); fieldKey = ""
            case 10 where schemaKey == "properties" && !fields.isEmpty:
                fieldKey = name
                let last = fields.count - 1
                switch name {
                case "type": fields[last].1.type = rest
                case "format": fields[last].1.format = rest
                case "$ref": fields[last].1.ref = Self.refName(rest)
                // A nullable reference (OpenAPI 3.0 ignores keys beside a $ref):
                // `type: object`, `nullable: true`, `allOf: [{$ref: '...'}]`.
                case "allOf": if let reference = Self.flowReference(rest) { fields[last].1.ref = reference }
                case "default": fields[last].1.defaultValue = Self.json(rest)
                case "deprecated": fields[last].1.deprecated = rest == "true"
                default: break
                }
            case 12 where schemaKey == "properties" && fieldKey == "items" && !fields.isEmpty:
                let last = fields.count - 1
                switch name {
                case "type": fields[last].1.items.type = rest
                case "format": fields[last].1.items.format = rest
                case "$ref": fields[last].1.items.ref = Self.refName(rest)
                default: break
                }
            default: break
            }
        }
        flushOperation()
        flushSchema()
    }

    /// A plain or quoted YAML scalar's text.
    static func scalar(_ text: String) -> String {
        let text = text.trimmingCharacters(in: .whitespaces)
        if text.count >= 2, text.hasPrefix("'"), text.hasSuffix("'") { return String(text.dropFirst().dropLast()).replacingOccurrences(of: "''", with: "'") }
        if text.count >= 2, text.hasPrefix("\""), text.hasSuffix("\"") { return String(text.dropFirst().dropLast()) }
        return text
    }

    /// The items of a flow-style list (`[a, 'b']`).
    static func list(_ text: String) -> [String] {
        text.trimmingCharacters(in: CharacterSet(charactersIn: "[] ")).split(separator: ",").map { scalar(String($0)) }.filter { !$0.isEmpty }
    }

    /// The schema an `allOf` of exactly one reference names (`[{$ref: '#/components/schemas/Name'}]`).
    static func flowReference(_ text: String) -> String? {
        let inner = text.trimmingCharacters(in: CharacterSet(charactersIn: "[]{} "))
        guard inner.hasPrefix("$ref:"), !inner.contains(",") else { return nil }
        return refName(scalar(String(inner.dropFirst("$ref:".count))))
    }

    /// `#/components/schemas/Name` → `Name`.
    static func refName(_ reference: String) -> String {
        String(reference.split(separator: "/").last ?? "")
    }

    /// A default as openapi_index.py writes it: JSON, with YAML's booleans, numbers and strings.
    static func json(_ value: String) -> String {
        if ["true", "false", "null"].contains(value) || Int(value) != nil || (Double(value) != nil && !value.contains(where: \.isLetter)) { return value }
        return "\"" + value.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"") + "\""
    }
}

private extension String {
    /// `-` for an empty cell, as in the index.
    var nonEmpty: String { isEmpty ? "-" : self }
}
