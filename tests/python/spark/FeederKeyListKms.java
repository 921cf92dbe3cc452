// A parquet-mr KmsClient for reading Feeder's encrypted datasets with Spark (or any
// parquet-mr reader), given the utility's master keys in the Hadoop configuration.
//
// Feeder wraps each file's data keys locally: AES-GCM under a named master key, the key's
// name as AAD, base64 of nonce || ciphertext || tag. That is parquet-mr's own local key
// wrapping (KeyToolkit.encryptKeyLocally), so this client only looks the master key up
// and hands the work to KeyToolkit. A utility with a real KMS unwraps there instead.
//
// Configuration (same form as parquet-mr's test InMemoryKMS, which Spark does not ship):
//   parquet.crypto.factory.class       = org.apache.parquet.crypto.keytools.PropertiesDrivenCryptoFactory
//   parquet.encryption.kms.client.class = org.feeder.FeederKeyListKms
//   parquet.encryption.key.list        = "k_footer: <base64 key>, k_cols: <base64 key>"
// Used by tests/python/check_spark.py; see docs/datasets.md, "Encrypted datasets".
package org.feeder;

import java.nio.charset.StandardCharsets;
import java.util.Base64;
import java.util.HashMap;
import java.util.Map;

import org.apache.hadoop.conf.Configuration;
import org.apache.parquet.crypto.KeyAccessDeniedException;
import org.apache.parquet.crypto.keytools.KeyToolkit;
import org.apache.parquet.crypto.keytools.KmsClient;

public class FeederKeyListKms implements KmsClient {
  public static final String KEY_LIST = "parquet.encryption.key.list";
  private final Map<String, byte[]> masterKeys = new HashMap<>();

  @Override
  public void initialize(Configuration conf, String kmsInstanceID, String kmsInstanceURL,
      String accessToken) {
    for (String entry : conf.getTrimmedStrings(KEY_LIST)) {
      int colon = entry.indexOf(':');
      if (colon <= 0) {
        throw new IllegalArgumentException(KEY_LIST + ": an entry is not <name>: <base64 key>");
      }
      masterKeys.put(entry.substring(0, colon).trim(),
          Base64.getDecoder().decode(entry.substring(colon + 1).trim()));
    }
  }

  private byte[] master(String id) {
    byte[] key = masterKeys.get(id);
    if (key == null) {
      throw new KeyAccessDeniedException("no master key named " + id + " in " + KEY_LIST);
    }
    return key;
  }

  @Override
  public String wrapKey(byte[] keyBytes, String masterKeyIdentifier) {
    return KeyToolkit.encryptKeyLocally(keyBytes, master(masterKeyIdentifier),
        masterKeyIdentifier.getBytes(StandardCharsets.UTF_8));
  }

  @Override
  public byte[] unwrapKey(String wrappedKey, String masterKeyIdentifier) {
    return KeyToolkit.decryptKeyLocally(wrappedKey, master(masterKeyIdentifier),
        masterKeyIdentifier.getBytes(StandardCharsets.UTF_8));
  }
}
