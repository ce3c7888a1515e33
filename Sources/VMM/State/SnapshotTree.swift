// The snapshot's state tree in Cloud Hypervisor's shape (vm-migration's `Snapshot`): each
// component is a node with named child nodes and, optionally, its own data as a JSON string
// (`{"snapshots": {...}, "snapshot_data": {"state": "..."}}`).
import JSONCoding

/// One node of `state.json`.
public struct SnapshotNode: Codable, Equatable, Sendable {
    /// The component's data (`SnapshotData`): its state encoded as JSON text.
    public struct Section: Codable, Equatable, Sendable {
        /// The JSON text.
        public var state: String
    }

    /// Sub-components by id (vCPUs by number, devices by id).
    public var snapshots: [String: SnapshotNode]
    /// This component's own data.
    public var snapshotData: Section?

    enum CodingKeys: String, CodingKey { case snapshots, snapshotData = "snapshot_data" }

    /// A node with children and optional data.
    public init(snapshots: [String: SnapshotNode] = [:], state: String? = nil) {
        self.snapshots = snapshots
        snapshotData = state.map(Section.init(state:))
    }

    /// Decodes; a missing `snapshots` map is empty.
    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        snapshots = try c.decodeIfPresent([String: SnapshotNode].self, forKey: .snapshots) ?? [:]
        snapshotData = try c.decodeIfPresent(Section.self, forKey: .snapshotData)
    }

    /// A node whose data is `value` encoded as JSON.
    static func leaf<T: Encodable>(_ value: T) throws -> SnapshotNode {
        SnapshotNode(state: try SnapshotJSON.text(value))
    }

    /// The child `id`, or an error naming `path`.
    func child(_ id: String, path: String) throws(SnapshotError) -> SnapshotNode {
        guard let node = snapshots[id] else { throw .damaged("state.json has no '\(path)/\(id)' section") }
        return node
    }

    /// This node's data decoded as `T`, or an error naming `path`.
    func decode<T: Decodable>(_ type: T.Type, path: String) throws(SnapshotError) -> T {
        guard let text = snapshotData?.state else { throw .damaged("state.json's '\(path)' section has no data") }
        do {
            return try SnapshotJSON.value(type, from: text)
        } catch {
            throw .damaged("state.json's '\(path)' section does not decode: \(error)")
        }
    }
}

/// JSON in and out for snapshot files, with sorted keys so a snapshot is reproducible.
enum SnapshotJSON {
    static func data<T: Encodable>(_ value: T) throws -> [UInt8] {
        try JSONCoding.encode(value, sortedKeys: true)
    }

    static func text<T: Encodable>(_ value: T) throws -> String {
        String(decoding: try data(value), as: UTF8.self)
    }

    static func value<T: Decodable>(_ type: T.Type, from bytes: [UInt8]) throws -> T {
        try JSONCoding.decode(type, from: bytes)
    }

    static func value<T: Decodable>(_ type: T.Type, from text: String) throws -> T {
        try value(type, from: Array(text.utf8))
    }
}

/// Why a snapshot could not be taken or restored; the text says what to do.
public enum SnapshotError: Error, Equatable, Sendable, CustomStringConvertible {
    /// The URL is not `file:///absolute/dir`.
    case badURL(String)
    /// The VM is not in a state that allows the action.
    case wrongState(String)
    /// A file could not be created, read or written.
    case io(String)
    /// A snapshot file is missing, damaged or inconsistent.
    case damaged(String)
    /// The snapshot was written by another format version.
    case version(found: UInt32, expected: UInt32)
    /// Something the snapshot holds cannot be rebuilt here.
    case unsupported(String)

    /// One sentence.
    public var description: String {
        switch self {
        case .badURL(let url):
            return "'\(url)' is not a snapshot location: use file:///absolute/path/to/a/directory"
        case .wrongState(let text), .io(let text), .unsupported(let text): return text
        case .damaged(let text): return "the snapshot is damaged or incomplete: \(text)"
        case .version(let found, let expected):
            let why = VMSnapshotHeader.olderFormats[found].map { ": \($0)" } ?? ""
            return "the snapshot has format version \(found), this VMM reads version \(expected) only\(why)"
        }
    }
}
