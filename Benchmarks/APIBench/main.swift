// api-bench: request latency over the API's Unix socket against the fake control.
// 10,000 vmm.ping and 10,000 vm.info on one keep-alive connection, one request at a time;
// prints the median and 99th percentile of each.
import CloudHypervisorAPI
import CloudHypervisorAPITesting
import Glibc
import VMM

let count = CommandLine.arguments.count > 1 ? Int(CommandLine.arguments[1]) ?? 10_000 : 10_000
let path = "/tmp/api-bench-\(getpid()).sock"
let control = FakeVMMControl()
var config = VMConfig()
config.payload = PayloadConfig(kernel: "/nonexistent/vmlinux")
try control.create(config)
try control.boot()
let server = APIServer(socketPath: path, control: control)
try server.start()
defer { server.stop() }

func nanoseconds() -> UInt64 {
    var now = timespec()
    clock_gettime(CLOCK_MONOTONIC, &now)
    return UInt64(now.tv_sec) * 1_000_000_000 + UInt64(now.tv_nsec)
}

func oneDecimal(_ value: Double) -> String { "\((value * 10).rounded() / 10)" }

func measure(_ label: String, path endpoint: String, client: APIClient) throws {
    for _ in 0..<200 { _ = try client.request("GET", endpoint) }  // Warm-up.
    var samples: [UInt64] = []
    samples.reserveCapacity(count)
    let start = nanoseconds()
    for _ in 0..<count {
        let before = nanoseconds()
        let response = try client.request("GET", endpoint)
        samples.append(nanoseconds() - before)
        guard response.status == 200 else { fatalError("\(label): status \(response.status)") }
    }
    let total = Double(nanoseconds() - start) / 1e9
    samples.sort()
    let median = Double(samples[samples.count / 2]) / 1000
    let p99 = Double(samples[min(samples.count - 1, samples.count * 99 / 100)]) / 1000
    let line = "\(label): \(count) requests, median \(oneDecimal(median)) µs, p99 \(oneDecimal(p99)) µs, \(Int(Double(count) / total)) requests/s"
    print(line)
}

let client = try APIClient(socketPath: path)
try measure("vmm.ping", path: "/api/v1/vmm.ping", client: client)
try measure("vm.info ", path: "/api/v1/vm.info", client: client)
client.close()
