// Against Foundation's coders (tests may import Foundation; the module never does).
import Foundation
import JSONCoding
import Testing

struct Config: Codable, Equatable {
    struct Cpus: Codable, Equatable {
        var bootVCPUs: UInt32
        var maxVCPUs: UInt32
        var affinity: [UInt32: [UInt32]]?
        enum CodingKeys: String, CodingKey { case bootVCPUs = "boot_vcpus", maxVCPUs = "max_vcpus", affinity }
    }
    var cpus: Cpus
    var memory: [String: UInt64]
    var disks: [[String: String]]?
    var serial: Mode
    var ratio: Double
    var scale: Float
    var tags: Set<String>
    var shapes: [Shape]
    var levels: [Int: Level]
}

/// Values whose Foundation and JSONCoding encodings must decode, each with the other, to themselves.
private let values: [Config] = [
    Config(cpus: .init(bootVCPUs: 1, maxVCPUs: 1, affinity: nil), memory: ["size": 1 << 30], disks: nil, serial: .tty,
           ratio: 0, scale: 0, tags: [], shapes: [], levels: [:]),
    Config(cpus: .init(bootVCPUs: 2, maxVCPUs: .max, affinity: [0: [1, 2], 7: []]), memory: ["size": .max, "hotplug_size": 0],
           disks: [["path": "/a/b.raw", "id": "é\"\\\n"], [:]], serial: .off, ratio: -1.0 / 3, scale: 3.25e-5,
           tags: ["x", "y/z", "😀"], shapes: [.circle(radius: 1e-300), .polygon([Point(x: .min, y: .max)], closed: false), .empty],
           levels: [-1: .low, 1_000_000: .high]),
    Config(cpus: .init(bootVCPUs: 0, maxVCPUs: 4_294_967_295, affinity: [:]), memory: [:], disks: [], serial: .tty,
           ratio: 1.7976931348623157e308, scale: 0.1, tags: [""], shapes: [.circle(radius: 123456789)], levels: [0: .high]),
]

@Suite("JSON coding against Foundation")
struct DifferentialTests {
    @Test("Foundation's encoding decodes with JSONCoding, and JSONCoding's with Foundation, to the same value")
    func codableValues() throws {
        for value in values {
            for formatting in [[], [.sortedKeys], [.sortedKeys, .withoutEscapingSlashes], [.prettyPrinted]] as [JSONEncoder.OutputFormatting] {
                let encoder = JSONEncoder()
                encoder.outputFormatting = formatting
                let foundation = Array(try encoder.encode(value))
                #expect(try JSONCoding.decode(Config.self, from: foundation) == value)
            }
            for sorted in [false, true] {
                let ours = try JSONCoding.encode(value, sortedKeys: sorted)
                #expect(try JSONDecoder().decode(Config.self, from: Data(ours)) == value)
            }
        }
    }

    @Test("with sorted keys and unescaped slashes the bytes equal Foundation's, except for how a whole double is written")
    func sameBytes() throws {
        struct Flat: Codable { var b: String; var a: [Int64]; var c: [String: Bool]; var d: UInt64; var e: Double }
        let value = Flat(b: "x/y\t\"é😀\u{1}", a: [.min, 0, .max], c: ["Z": true, "_": false, "a": true, "10": false, "9": true],
                         d: .max, e: 0.1)
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        #expect(try JSONCoding.encode(value, sortedKeys: true) == Array(encoder.encode(value)))
    }

    /// Documents both decode, as `[String: [Int64]]`, `[Double]` or `[String]`.
    static let sampleDocuments: [String] = [
        #"{"a":[1,2,3],"b":[],"c":[-9223372036854775808,9223372036854775807]}"#,
        #" { "a" : [ 1 ] , "é" : [ ] } "#,
        "[0.5,1e10,-2.5E-3,1,18446744073709551615,0]",
        #"["a\"b\\c\/d\u00e9\ud83d\ude00\b\f\n\r\t","","\u0000"]"#,
    ]

    @Test("documents decode to the same values with both", arguments: sampleDocuments)
    func documents(text: String) throws {
        let bytes = Array(text.utf8)
        if let ints = try? JSONDecoder().decode([String: [Int64]].self, from: Data(bytes)) {
            #expect(try JSONCoding.decode([String: [Int64]].self, from: bytes) == ints)
        } else if let doubles = try? JSONDecoder().decode([Double].self, from: Data(bytes)) {
            #expect(try JSONCoding.decode([Double].self, from: bytes) == doubles)
        } else {
            let strings = try JSONDecoder().decode([String].self, from: Data(bytes))
            #expect(try JSONCoding.decode([String].self, from: bytes) == strings)
        }
    }

    @Test("what JSONCoding refuses and Foundation takes: integer fields given 1.0 or 5e8 (serde refuses them too)")
    func stricterThanFoundation() throws {
        let text = Array(#"{"size":1.0,"other":5e8}"#.utf8)
        #expect(try JSONDecoder().decode([String: UInt64].self, from: Data(text)) == ["size": 1, "other": 500_000_000])
        #expect(throws: DecodingError.self) { try JSONCoding.decode([String: UInt64].self, from: text) }
        #expect(try JSONCoding.decode([String: Double].self, from: text) == ["size": 1, "other": 5e8])
    }
}
