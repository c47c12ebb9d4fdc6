// Java's default partitioner for keyed records, as Kafka's clients (and so Kafka Connect and
// Debezium) compute it: toPositive(Utils.murmur2(key bytes)) % partitions. Written from the
// algorithm's definition so tests can check the relay against it independently of librdkafka.
#pragma once

#include <cstdint>
#include <string_view>

namespace outbox::test {

// Kafka's org.apache.kafka.common.utils.Utils.murmur2: MurmurHash2, seed 0x9747b28c, 32-bit.
inline std::int32_t java_murmur2(std::string_view key) {
  const auto* data = reinterpret_cast<const unsigned char*>(key.data());
  const std::uint32_t length = static_cast<std::uint32_t>(key.size());
  constexpr std::uint32_t m = 0x5bd1e995;
  constexpr int r = 24;
  std::uint32_t h = 0x9747b28cU ^ length;
  const std::uint32_t blocks = length / 4;
  for (std::uint32_t i = 0; i < blocks; ++i) {
    const std::uint32_t i4 = i * 4;
    std::uint32_t k = static_cast<std::uint32_t>(data[i4]) | (static_cast<std::uint32_t>(data[i4 + 1]) << 8) |
                      (static_cast<std::uint32_t>(data[i4 + 2]) << 16) | (static_cast<std::uint32_t>(data[i4 + 3]) << 24);
    k *= m;
    k ^= k >> r;
    k *= m;
    h *= m;
    h ^= k;
  }
  const std::uint32_t tail = length & ~3U;
  switch (length % 4) {
    case 3: h ^= static_cast<std::uint32_t>(data[tail + 2]) << 16; [[fallthrough]];
    case 2: h ^= static_cast<std::uint32_t>(data[tail + 1]) << 8; [[fallthrough]];
    case 1:
      h ^= static_cast<std::uint32_t>(data[tail]);
      h *= m;
      break;
    default: break;
  }
  h ^= h >> 13;
  h *= m;
  h ^= h >> 15;
  return static_cast<std::int32_t>(h);
}

// The partition Java's producer picks for a non-null key.
inline int java_partition(std::string_view key, int partitions) {
  return static_cast<int>((static_cast<std::uint32_t>(java_murmur2(key)) & 0x7fffffffU) %
                          static_cast<std::uint32_t>(partitions));
}

}  // namespace outbox::test
