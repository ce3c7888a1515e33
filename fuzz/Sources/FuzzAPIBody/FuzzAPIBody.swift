// fuzz-api-body: the REST API's routing and body decoding without sockets. A sequence of
// fuzzed requests (method, a real endpoint or a fuzzed target, a fuzzed body) goes through
// APIRouter to the scripted FakeVMMControl. Every refusal must be a JSON list of messages,
// and with the permissive fake only the endpoints Cloud Hypervisor reports as unsupported
// may answer 5xx (anything else there is a server bug, as Scripts/api-fuzz.sh assumes).
#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import CloudHypervisorAPI
import CloudHypervisorAPITesting
import FuzzSupport
import VMM

@main
enum APIBodyFuzzer {
    static func main() { FuzzDriver.run(seeds: seeds, testOneInput) }
}

private let methods: [HTTPMethod] = [.GET, .PUT, .POST, .DELETE, .PATCH, .HEAD, .OPTIONS, .TRACE]

/// Whether Cloud Hypervisor answers `endpoint` with 500 because it is not implemented.
private func reportedUnsupported(_ endpoint: APIEndpoint?) -> Bool {
    guard let endpoint else { return false }
    if endpoint == .vmNmi { return true }
    if case .unsupported = endpoint.body { return true }
    return false
}

@_cdecl("LLVMFuzzerTestOneInput")
public func testOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    fuzzEntry(data, size) { input in
        let permissive = input.bool()
        let router = APIRouter(control: FakeVMMControl(permissive: permissive))
        let endpoints = APIEndpoint.allCases
        while !input.isExhausted {
            let method = input.pick(methods)
            let choice = input.int(in: 0...(endpoints.count + 1))
            let uri: String
            switch choice {
            case ..<endpoints.count: uri = endpoints[choice].path + (input.byte() == 0xff ? "?x=1" : "")
            case endpoints.count: uri = APIEndpoint.root + String(decoding: input.run(maxCount: 40), as: UTF8.self)
            default: uri = String(decoding: input.run(maxCount: 80), as: UTF8.self)
            }
            let body = input.bool() ? input.run(maxCount: 4000) : nil
            let response = router.respond(to: APIRequest(method: method, uri: uri, body: body))
            let status = response.status.code
            if status >= 400 {
                let messages = response.body.flatMap { try? JSONDecoder().decode([String].self, from: Data($0)) }
                fuzzCheck(messages.map { !$0.isEmpty } == true, "\(status) for \(method) \(uri) without a JSON list of messages")
            }
            if permissive, status >= 500 {
                fuzzCheck(reportedUnsupported(APIEndpoint(path: uri)), "\(status) from the permissive fake for \(method) \(uri)")
            }
        }
    }
}

/// vm.create with a minimal and a fuller configuration, then boot, info, pause, counters, ping.
private func seeds() -> [[UInt8]] {
    let endpoints = APIEndpoint.allCases
    /// One request: method index, endpoint index, body.
    func request(_ method: HTTPMethod, _ endpoint: APIEndpoint, body: String? = nil) -> [UInt8] {
        var builder = FuzzInputBuilder()
        builder.byte(UInt8(methods.firstIndex(of: method)!))
        builder.byte(UInt8(endpoints.firstIndex(of: endpoint)!))
        builder.byte(0)
        if let body {
            builder.byte(1)
            builder.run(Array(body.utf8), maxCount: 4000)
        } else {
            builder.byte(0)
        }
        return builder.bytes
    }
    let minimal = #"{"payload":{"kernel":"/boot/vmlinux","cmdline":"console=ttyS0"}}"#
    let full = #"{"cpus":{"boot_vcpus":2,"max_vcpus":2},"memory":{"size":1073741824},"payload":{"kernel":"/k"},"# +
        #""serial":{"mode":"Tty"},"console":{"mode":"Off"},"rng":{"src":"/dev/urandom"},"disks":[{"path":"/d.raw","id":"d0"}]}"#
    return [
        [0] + request(.PUT, .vmCreate, body: minimal) + request(.PUT, .vmBoot) + request(.GET, .vmInfo),
        [0] + request(.PUT, .vmCreate, body: full) + request(.PUT, .vmBoot) + request(.PUT, .vmPause)
            + request(.GET, .vmCounters) + request(.PUT, .vmResume) + request(.PUT, .vmShutdown),
        [1] + request(.GET, .vmmPing) + request(.PUT, .vmAddDisk, body: #"{"path":"/x"}"#) + request(.PUT, .vmResize, body: "[]"),
    ]
}
