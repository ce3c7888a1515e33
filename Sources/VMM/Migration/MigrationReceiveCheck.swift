// The receiving side of a live migration driven by bytes alone, without KVM: what the
// `migration-receive` fuzz target and tests feed hostile senders' streams to.
import GuestMemory
import HostSystem

/// Runs the migration receiver over a byte stream, as if a sender had written it.
public enum MigrationReceiveCheck {
    /// Feeds `stream` to a receiver whose machine cannot be built (a `Config` that decodes and
    /// validates is refused at that step) and returns why the receiver stopped: it always
    /// stops with a reason, since no stream without a machine can complete.
    public static func receive(_ stream: [UInt8]) -> MigrationError {
        let sockets: (UnixSocket, UnixSocket)
        do { sockets = try UnixSocket.pair() } catch { return MigrationError("no socket pair: \(error)") }
        let (sender, receiving) = sockets
        // The stream and the receiver's answers both fit the socket buffers for inputs of
        // fuzzing size; longer streams are cut there.
        try? sender.descriptor.setNonBlocking(true)
        if !stream.isEmpty { _ = try? sender.send(stream.prefix(64 << 10)) }
        try? sender.shutdown(.writing)
        let receiver = MigrationReceiver(checksCPUID: false, factory: MigrationMachineFactory(
            memory: { _, _, _ in throw MigrationError("no machine is built while fuzzing") },
            machine: { _, _, _ in throw MigrationError("no machine is built while fuzzing") }))
        // The sending end stays open until the receiver is done, so its answers have a reader.
        return withExtendedLifetime(sender) {
            do throws(MigrationError) {
                _ = try receiver.run(MigrationChannel(unix: receiving))
                return MigrationError("the receiver completed a migration without a machine")
            } catch {
                return error
            }
        }
    }

    /// Reads the body of a `Memory` request (a range table of `tableLength` bytes, then the
    /// ranges' bytes) from `stream` into a fresh guest memory of `size` bytes at address 0,
    /// and returns the memory, or why it was refused.
    public static func receiveMemory(tableLength: UInt64, stream: [UInt8], size: UInt64) -> Result<GuestMemory, MigrationError> {
        let memory: GuestMemory
        do { memory = try GuestMemory.anonymous([(GuestAddress(0), size)]) } catch { return .failure(MigrationError("\(error)")) }
        let sockets: (UnixSocket, UnixSocket)
        do { sockets = try UnixSocket.pair() } catch { return .failure(MigrationError("no socket pair: \(error)")) }
        let (sender, receiving) = sockets
        try? sender.descriptor.setNonBlocking(true)
        if !stream.isEmpty { _ = try? sender.send(stream.prefix(64 << 10)) }
        try? sender.shutdown(.writing)
        return withExtendedLifetime(sender) {
            do throws(MigrationError) {
                try MigrationMemory.receive(tableLength: tableLength, into: memory, over: MigrationChannel(unix: receiving))
                return .success(memory)
            } catch {
                return .failure(error)
            }
        }
    }

    /// A well-formed sender's stream up to its `Config` (Start, then `config` as the payload).
    public static func streamStart(config: [UInt8]) -> [UInt8] {
        MigrationRequest.start().bytes + MigrationRequest(.config, length: UInt64(config.count)).bytes + config
    }

    /// A `Memory` request's body: the table, then each range's bytes (`fill`).
    public static func memoryBody(_ ranges: [MemoryRange], fill: UInt8) -> (tableLength: UInt64, stream: [UInt8]) {
        let table = MigrationRangeCodec.encode(MemoryRangeTable(ranges))
        var stream = table
        for range in ranges { stream += [UInt8](repeating: fill, count: Int(range.length)) }
        return (UInt64(table.count), stream)
    }
}
