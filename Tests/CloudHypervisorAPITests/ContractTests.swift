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
    static let document: String = {
        let repository = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        return (try? String(contentsOf: repository.appendingPathComponent("docs/api/cloud-hypervisor-swift.yaml"), encoding: .utf8)) ?? ""
    }()

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
            case .vmConfig, .unsupported: needsBody = true
            case .none, .ignored: needsBody = false
            }
            #expect(operation.takesBody == needsBody, "\(operation)")
        }
    }

    /// The state in which an operation succeeds, and the body it needs.
    static func successScenario(_ endpoint: APIEndpoint) -> (state: VMState?, body: String?) {
        switch endpoint {
        case .vmmPing, .vmmShutdown: (nil, nil)
        case .vmCreate: (nil, validConfigJSON)
        case .vmBoot: (.created, nil)
        case .vmResume: (.paused, nil)
        case .vmInfo, .vmCounters, .vmDelete, .vmPause, .vmShutdown, .vmReboot, .vmPowerButton, .vmNmi: (.running, nil)
        default: (.running, "{}")
        }
    }

    @Test("each documented operation answers its documented 2xx in its success scenario (500 where it is unsupported)",
          arguments: operations)
    func success(operation: Operation) throws {
        let endpoint = try #require(APIEndpoint(path: "/api/v1" + operation.path))
        let scenario = Self.successScenario(endpoint)
        try withServer(control: try fake(in: scenario.state)) { _, path throws in
            let response = try send(path, operation.method.uppercased(), "/api/v1" + operation.path, body: scenario.body)
            let expected = operation.statuses.first { (200..<300).contains($0) } ?? 500
            #expect(response.status == expected, "\(operation): \(response.text)")
            if response.status == 200, !response.body.isEmpty {
                #expect(response.header("Content-Type") == "application/json")
                _ = try JSONSerialization.jsonObject(with: Data(response.body))
            }
        }
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
