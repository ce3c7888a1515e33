// api-test-server: the REST API over FakeVMMControl on a Unix socket, for Scripts/api-fuzz.sh.
// Usage: api-test-server <socket-path> [--permissive]
// Runs until killed. --permissive makes every action succeed whatever the VM's state, so that
// any 5xx other than an unsupported endpoint's is a server bug.
import CloudHypervisorAPI
import CloudHypervisorAPITesting
import Glibc
import HostSystem

let arguments = CommandLine.arguments.dropFirst()
guard let path = arguments.first(where: { !$0.hasPrefix("--") }) else {
    writeToStandardError("usage: api-test-server <socket-path> [--permissive]\n")
    exit(2)
}
let control = FakeVMMControl(permissive: arguments.contains("--permissive"))
let server = APIServer(socketPath: path, control: control)
do {
    try server.start()
} catch {
    writeToStandardError("api-test-server: \(error)\n")
    exit(1)
}
writeToStandardError("api-test-server: listening on \(path)\n")
while true { sleep(3600) }
